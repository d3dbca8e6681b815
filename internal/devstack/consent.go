package devstack

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
)

// What an administrator can take back in a tenant, so that every verdict
// of doctor can be rehearsed: one application permission (its app role
// assignment removed), the admin consent as a whole (every assignment
// removed, the service principal kept), or the enterprise application
// itself (the service principal deleted). A token issued before the
// change keeps its roles until it expires, as Entra ID's do: the claim is
// signed in.

// Consent is what WithdrawConsent takes back.
type Consent int

const (
	// ConsentRoles revokes the admin consent: tokens are issued with no
	// roles claim, and the APIs answer 403 "… application roles: ."
	ConsentRoles Consent = iota
	// ConsentApp deletes the app's service principal from the tenant:
	// token requests answer AADSTS700016.
	ConsentApp
)

// WithdrawRole removes one application permission of app clientID in
// tenant (ID or domain): tokens issued after it omit the role.
func (s *Stack) WithdrawRole(tenant, clientID, role string) error {
	return s.changeGrant(tenant, clientID, func(g *Grant, start Grant) error {
		res := resourceOf(role)
		if res == "" || !slices.Contains(g.Roles[res], role) {
			return fmt.Errorf("the app holds no application permission %q in this tenant", role)
		}
		roles := maps.Clone(g.Roles)
		roles[res] = slices.DeleteFunc(slices.Clone(roles[res]), func(r string) bool { return r == role })
		g.Roles = roles
		return nil
	})
}

// RestoreRole grants role again, if the app held it at start; "all"
// restores every role it held then.
func (s *Stack) RestoreRole(tenant, clientID, role string) error {
	return s.changeGrant(tenant, clientID, func(g *Grant, start Grant) error {
		if role == "all" {
			g.Roles = start.Roles
			return nil
		}
		res := resourceOf(role)
		if res == "" || !slices.Contains(start.Roles[res], role) {
			return fmt.Errorf("the app held no application permission %q in this tenant at start", role)
		}
		// In the order of start, as a token lists them.
		roles := maps.Clone(g.Roles)
		if roles == nil {
			roles = map[string][]string{}
		}
		have := roles[res]
		roles[res] = slices.DeleteFunc(slices.Clone(start.Roles[res]), func(r string) bool { return r != role && !slices.Contains(have, r) })
		g.Roles = roles
		return nil
	})
}

// WithdrawConsent takes back the admin consent (ConsentRoles) or the
// enterprise application (ConsentApp) of app clientID in tenant.
func (s *Stack) WithdrawConsent(tenant, clientID string, c Consent) error {
	return s.changeGrant(tenant, clientID, func(g *Grant, _ Grant) error {
		if c == ConsentApp {
			g.deleted = true
		} else {
			g.Roles = nil
		}
		return nil
	})
}

// RestoreConsent puts the app's service principal and roles in tenant back
// as they were at start.
func (s *Stack) RestoreConsent(tenant, clientID string) error {
	return s.changeGrant(tenant, clientID, func(g *Grant, start Grant) error {
		*g = start
		return nil
	})
}

// changeGrant applies change to the app's grant in tenant under the
// directory's lock; start is the grant as it was at start.
func (s *Stack) changeGrant(tenant, clientID string, change func(g *Grant, start Grant) error) error {
	t := s.dir.tenant(tenant)
	if t == nil {
		return fmt.Errorf("no tenant %q in the directory", tenant)
	}
	d := s.dir
	d.mu.Lock()
	defer d.mu.Unlock()
	g := d.grantLocked(t, clientID)
	i := slices.IndexFunc(d.granted[t.ID], func(g Grant) bool { return strings.EqualFold(g.ClientID, clientID) })
	if g == nil || i < 0 {
		return fmt.Errorf("app %s was never consented in tenant %s", clientID, t.ID)
	}
	return change(g, d.granted[t.ID][i])
}

// resourceOf is the API whose app role this is ("" for none the devstack
// knows): the Graph and XDR role names do not overlap.
func resourceOf(role string) string {
	for _, res := range []string{GraphResource, XDRResource} {
		known := append(slices.Clone(AllRoles[res]), ReadOnlyRoles[res]...)
		if slices.Contains(known, role) {
			return res
		}
	}
	return ""
}

// consentControls serves the controls: POST /control/roles?withdraw=<role>
// or ?restore=<role|all>, POST /control/consent?withdraw=roles|app or
// ?restore; tenant= (ID or domain) and app= (client ID) default to the
// first tenant and the default app. Each answers the grant as it now is.
func (s *Stack) consentControls(mux *http.ServeMux) {
	mux.HandleFunc("POST /control/roles", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		tenant, app := s.controlTarget(r)
		var err error
		switch {
		case q.Has("withdraw"):
			err = s.WithdrawRole(tenant, app, q.Get("withdraw"))
		case q.Has("restore"):
			err = s.RestoreRole(tenant, app, q.Get("restore"))
		default:
			err = errors.New("say withdraw=<role> or restore=<role|all>")
		}
		s.answerGrant(w, tenant, app, err)
	})
	mux.HandleFunc("POST /control/consent", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		tenant, app := s.controlTarget(r)
		var err error
		switch {
		case q.Get("withdraw") == "roles":
			err = s.WithdrawConsent(tenant, app, ConsentRoles)
		case q.Get("withdraw") == "app":
			err = s.WithdrawConsent(tenant, app, ConsentApp)
		case q.Has("restore"):
			err = s.RestoreConsent(tenant, app)
		default:
			err = errors.New("say withdraw=roles, withdraw=app or restore")
		}
		s.answerGrant(w, tenant, app, err)
	})
}

func (s *Stack) controlTarget(r *http.Request) (tenant, app string) {
	tenant, app = r.URL.Query().Get("tenant"), r.URL.Query().Get("app")
	if tenant == "" {
		tenant = s.opts.Tenants[0].ID
	}
	if app == "" {
		app = DefaultClientID
	}
	return tenant, app
}

// answerGrant writes the app's grant in tenant after a change, or the
// change's error as a 400.
func (s *Stack) answerGrant(w http.ResponseWriter, tenant, app string, err error) {
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	t := s.dir.tenant(tenant)
	g, consented := s.dir.grant(t, app)
	roles := g.Roles
	if roles == nil {
		roles = map[string][]string{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"tenant": t.ID, "app": app, "consented": consented, "roles": roles})
}
