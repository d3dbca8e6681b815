package doctor

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"unicode/utf16"
)

// MaxSettingsFile bounds a settings file: one app's settings (Lambda caps
// a function's variables at 4 KB) are far smaller.
const MaxSettingsFile = 1 << 20

// What wrote a settings file, as the command that does; each shape is
// recognised by its form.
const (
	FromAzure     = "az functionapp config appsettings list"
	FromLambda    = "aws lambda get-function-configuration"
	FromCoreTools = "local.settings.json"
	FromEnvFile   = "NAME=VALUE lines"
)

// exportHow is what an error about a file's shape says to do.
const exportHow = "export the app's settings with `az functionapp config appsettings list -g <group> -n <app> -o json > FILE` (Azure) " +
	"or `aws lambda get-function-configuration --function-name <function> --output json > FILE` (AWS), or write NAME=VALUE lines"

// Settings are a deployed app's settings as its operator exported them
// from the platform: they take the place of the environment. Their values
// are never printed (some are secrets); errors name lines and settings.
type Settings struct {
	// Source is what wrote the file (FromAzure …).
	Source string
	values map[string]string
}

// Lookup is a setting's value, as os.LookupEnv.
func (s *Settings) Lookup(name string) (string, bool) {
	v, ok := s.values[name]
	return v, ok
}

// Names are the settings' names, sorted.
func (s *Settings) Names() []string {
	n := make([]string, 0, len(s.values))
	for k := range s.values {
		n = append(n, k)
	}
	slices.Sort(n)
	return n
}

// ReadSettings reads a settings file of any shape ParseSettings knows.
func ReadSettings(path string) (*Settings, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("settings file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxSettingsFile+1))
	if err != nil {
		return nil, fmt.Errorf("settings file %s: %w", path, err)
	}
	if len(data) > MaxSettingsFile {
		return nil, fmt.Errorf("settings file %s: the file is larger than %d KiB: it is not one app's settings; %s", path, MaxSettingsFile>>10, exportHow)
	}
	s, err := ParseSettings(data)
	if err != nil {
		return nil, fmt.Errorf("settings file %s: %w", path, err)
	}
	return s, nil
}

// ParseSettings reads the output of `az functionapp config appsettings
// list -o json` (an array of {name, value, slotSetting}), of `aws lambda
// get-function-configuration --output json` (an object with
// Environment.Variables), a local.settings.json, or NAME=VALUE lines.
func ParseSettings(data []byte) (*Settings, error) {
	data = utf8Of(data)
	trimmed := bytes.TrimSpace(data)
	switch {
	case len(trimmed) == 0:
		return nil, errors.New("the file is empty: " + exportHow)
	case trimmed[0] == '[':
		return parseAzure(trimmed)
	case trimmed[0] == '{':
		return parseObject(trimmed)
	}
	return parseEnvFile(data)
}

// utf8Of drops a UTF-8 byte-order mark and decodes UTF-16 (what `>`
// writes in Windows PowerShell 5.1).
func utf8Of(data []byte) []byte {
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))
	if len(data) < 2 || len(data)%2 != 0 || !(data[0] == 0xff && data[1] == 0xfe) {
		return data
	}
	u := make([]uint16, 0, len(data)/2-1)
	for i := 2; i < len(data); i += 2 {
		u = append(u, uint16(data[i])|uint16(data[i+1])<<8)
	}
	return []byte(string(utf16.Decode(u)))
}

// parseAzure: `az functionapp config appsettings list` (the CLI's
// _build_app_settings_output). A null value is one the CLI masks; a list
// where every value is null is the output of `appsettings set`, which
// hides them all.
func parseAzure(data []byte) (*Settings, error) {
	var list []struct {
		Name        *string `json:"name"`
		Value       *string `json:"value"`
		SlotSetting *bool   `json:"slotSetting"`
	}
	if err := strictJSON(data, &list); err != nil {
		if strings.HasPrefix(err.Error(), "not valid JSON") {
			return nil, err
		}
		return nil, fmt.Errorf("%w (a JSON array must be the output of %s -o json)", err, FromAzure)
	}
	s := &Settings{Source: FromAzure, values: map[string]string{}}
	for i, e := range list {
		if e.Name == nil || *e.Name == "" {
			return nil, fmt.Errorf("entry %d has no name: a JSON array must be the output of %s -o json", i+1, FromAzure)
		}
		if e.Value == nil {
			continue
		}
		if err := s.add(*e.Name, *e.Value); err != nil {
			return nil, err
		}
	}
	if len(s.values) == 0 {
		return nil, fmt.Errorf("no setting has a value (the output of `appsettings set` hides them): export with %s -g <group> -n <app> -o json", FromAzure)
	}
	return s, nil
}

// lambdaConfig is what parseObject reads of a Lambda function's
// configuration (GetFunctionConfiguration's response).
type lambdaConfig struct {
	FunctionName string
	FunctionArn  string
	Environment  *struct {
		Variables map[string]string
		Error     *struct{ ErrorCode string }
	}
}

// coreTools is a local.settings.json, as Azure Functions Core Tools write it
// (`func azure functionapp fetch-app-settings` writes one, encrypted).
type coreTools struct {
	IsEncrypted bool
	Values      map[string]string
}

// parseObject: a Lambda function's configuration, or a local.settings.json.
func parseObject(data []byte) (*Settings, error) {
	var probe map[string]json.RawMessage
	if err := strictJSON(data, &probe); err != nil {
		return nil, err
	}
	switch {
	case probe["FunctionArn"] != nil || probe["FunctionName"] != nil:
		var c lambdaConfig
		if err := json.Unmarshal(data, &c); err != nil {
			return nil, fmt.Errorf("not the output of %s: %w", FromLambda, typeError(err))
		}
		return lambdaSettings(c)
	case probe["Values"] != nil:
		var c coreTools
		if err := json.Unmarshal(data, &c); err != nil {
			return nil, fmt.Errorf("not a %s: %w", FromCoreTools, typeError(err))
		}
		if c.IsEncrypted {
			return nil, errors.New("the local.settings.json is encrypted (IsEncrypted: true): run `func settings decrypt` in its folder first")
		}
		s := &Settings{Source: FromCoreTools, values: map[string]string{}}
		for k, v := range c.Values {
			if err := s.add(k, v); err != nil {
				return nil, err
			}
		}
		return s, nil
	}
	return nil, errors.New("a JSON object that is neither the output of " + FromLambda + " (FunctionArn, Environment.Variables) nor a " + FromCoreTools + " (Values): " + exportHow)
}

// lambdaSettings are a function's variables, with the two Lambda sets at
// run time, which its configuration does not list: AWS_REGION (from the
// ARN) and AWS_LAMBDA_FUNCTION_NAME.
func lambdaSettings(c lambdaConfig) (*Settings, error) {
	if c.Environment != nil && c.Environment.Error != nil {
		return nil, fmt.Errorf("lambda could not read the function's environment variables (%s): fix the function's KMS key or its access to it, then export again", c.Environment.Error.ErrorCode)
	}
	if c.Environment == nil || len(c.Environment.Variables) == 0 {
		return nil, fmt.Errorf("function %q has no environment variables: export the configuration of the function the SAM template made (its FunctionName output)", c.FunctionName)
	}
	s := &Settings{Source: FromLambda, values: map[string]string{}}
	for k, v := range c.Environment.Variables {
		if err := s.add(k, v); err != nil {
			return nil, err
		}
	}
	// arn:<partition>:lambda:<region>:<account>:function:<name>[:<qualifier>]
	if p := strings.Split(c.FunctionArn, ":"); len(p) >= 7 && p[2] == "lambda" && p[3] != "" {
		if _, ok := s.values["AWS_REGION"]; !ok {
			s.values["AWS_REGION"] = p[3]
		}
	}
	if _, ok := s.values["AWS_LAMBDA_FUNCTION_NAME"]; !ok && c.FunctionName != "" {
		s.values["AWS_LAMBDA_FUNCTION_NAME"] = c.FunctionName
	}
	return s, nil
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)

// parseEnvFile: NAME=VALUE lines, as the devstack's devstack.env or a
// shell's `export` lines; # comments, blank lines, quotes around a value.
func parseEnvFile(data []byte) (*Settings, error) {
	s := &Settings{Source: FromEnvFile, values: map[string]string{}}
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(strings.TrimSuffix(line, "\r"))
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		name = strings.TrimSpace(name)
		if !ok || !envName.MatchString(name) {
			return nil, fmt.Errorf("line %d is not NAME=VALUE, and the file is not JSON: %s", i+1, exportHow)
		}
		value = strings.TrimSpace(value)
		if n := len(value); n >= 2 && (value[0] == '"' && value[n-1] == '"' || value[0] == '\'' && value[n-1] == '\'') {
			value = value[1 : n-1]
		}
		if err := s.add(name, value); err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
	}
	if len(s.values) == 0 {
		return nil, errors.New("the file holds no NAME=VALUE line: " + exportHow)
	}
	return s, nil
}

func (s *Settings) add(name, value string) error {
	if _, dup := s.values[name]; dup {
		return fmt.Errorf("%s is set twice: keep one", name)
	}
	s.values[name] = value
	return nil
}

// strictJSON decodes one JSON value, saying where a syntax error is
// (never what is there: it may be part of a secret).
func strictJSON(data []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(data))
	d.DisallowUnknownFields()
	err := d.Decode(v)
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		line := 1 + bytes.Count(data[:min(int(se.Offset), len(data))], []byte("\n"))
		return fmt.Errorf("not valid JSON (line %d): export it again, unchanged", line)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("not valid JSON (it ends too soon): export it again, unchanged")
	case err != nil:
		return typeError(err)
	case d.More():
		return errors.New("not valid JSON (more follows the first value): export one app's settings per file")
	}
	return nil
}

// typeError says which field has the wrong kind of value, or what field is
// unknown, without the value.
func typeError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("%s is a JSON %s where a %s belongs", te.Field, te.Value, te.Type)
	}
	if msg := err.Error(); strings.HasPrefix(msg, "json: unknown field ") {
		return fmt.Errorf("unknown field %s", strings.TrimPrefix(msg, "json: unknown field "))
	}
	return errors.New("not valid JSON: export it again, unchanged")
}
