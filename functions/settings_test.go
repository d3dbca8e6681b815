package functions_test

import (
	"reflect"
	"testing"

	"github.com/defender-functions/defender-functions/functions"
	"github.com/defender-functions/defender-functions/shared/config"
)

// Every field of the credentials' Registration is filled from the setting
// of the same name: one forgotten in the mapping would be zero.
func TestRegistrationMapsEverySetting(t *testing.T) {
	cfg := &config.Config{}
	v := reflect.ValueOf(cfg).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString("set-" + v.Type().Field(i).Name)
		case reflect.Int, reflect.Int64:
			f.SetInt(int64(i + 1))
		case reflect.Bool:
			f.SetBool(true)
		case reflect.Slice:
			if f.Type().Elem().Kind() == reflect.String {
				f.Set(reflect.Append(f, reflect.ValueOf("set").Convert(f.Type().Elem())))
			}
		}
	}
	reg := reflect.ValueOf(functions.Registration(cfg))
	for i := range reg.NumField() {
		name := reg.Type().Field(i).Name
		want := v.FieldByName(name)
		if !want.IsValid() {
			t.Errorf("Registration.%s has no setting of its name in config.Config", name)
			continue
		}
		if got := reg.Field(i); !reflect.DeepEqual(got.Interface(), want.Interface()) {
			t.Errorf("Registration.%s = %v, the setting holds %v", name, got, want)
		}
	}
}
