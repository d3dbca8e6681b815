package ticketwebhook

import (
	"reflect"
	"slices"
	"testing"

	"github.com/defender-functions/defender-functions/shared/config"
)

// The providers config reads secrets for are the ones the receiver knows,
// and each one's part of the mapping is the mapping's key of its name.
func TestProvidersAreConfigs(t *testing.T) {
	var names []string
	for n := range providers {
		names = append(names, n)
	}
	if !slices.Equal(slices.Sorted(slices.Values(names)), slices.Sorted(slices.Values(config.WebhookProviders))) {
		t.Fatalf("the receiver knows %v, config reads secrets for %v", names, config.WebhookProviders)
	}
	m := &Mapping{}
	typ := reflect.TypeOf(*m)
	for _, n := range config.WebhookProviders {
		got := providers[n].mapping(m)
		var tag string
		for i := range typ.NumField() {
			if reflect.ValueOf(m).Elem().Field(i).Addr().Interface() == any(got) {
				tag = typ.Field(i).Tag.Get("json")
			}
		}
		if tag != n {
			t.Errorf("%s reads the mapping's %q", n, tag)
		}
	}
	if got := providerList("/"); got != "/jira, /servicenow or /generic" {
		t.Errorf("providerList = %q", got)
	}
}
