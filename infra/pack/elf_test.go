package main

import (
	"debug/elf"
	"testing"
)

func elfMachine(t *testing.T, p string) string {
	f, err := elf.Open(p)
	if err != nil {
		t.Fatalf("%s is not an ELF binary: %v", p, err)
	}
	defer f.Close()
	switch f.Machine {
	case elf.EM_X86_64:
		return "x86-64"
	case elf.EM_AARCH64:
		return "aarch64"
	}
	return f.Machine.String()
}
