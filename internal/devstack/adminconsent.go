package devstack

import (
	"fmt"
	"net/http"
	"net/url"
)

// The admin consent endpoint, so that the link doctor prints for a missing
// role can be followed on the devstack as an administrator would follow
// Entra ID's (learn.microsoft.com, "Admin consent on the Microsoft
// identity platform"): GET /{tenant}/adminconsent?client_id=… (v1) or
// /{tenant}/v2.0/adminconsent?client_id=…&scope=…/.default. There is no
// sign-in page: the request stands for an administrator who signed in and
// approved. Consent grants the app's configured application permissions
// again (RestoreConsent: every role it held at start, its service
// principal back), then sends the browser to the redirect URI with
// admin_consent=True, tenant and state. redirect_uri must be one the app
// registered (AADSTS50011 otherwise); omitted, the registered one is used,
// as Entra ID does for an app that registered one (one that registered
// none answers AADSTS500113). Every devstack app has ConsentRedirectPath on
// the devstack's Entra ID host registered, so the link doctor prints
// without a redirect URI works here as it does for such an app.

// ConsentRedirectPath is the devstack's registered redirect URI, on the
// Entra ID host: a page that says consent was granted.
const ConsentRedirectPath = "/devstack/consented"

func (s *Stack) consentRedirectURI() string { return s.EntraURL + ConsentRedirectPath }

func (s *Stack) adminConsent(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	t := s.dir.tenant(r.PathValue("tenant"))
	if t == nil {
		s.aadError(w, http.StatusBadRequest, "invalid_tenant", 90002, fmt.Sprintf("Tenant '%s' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud.", r.PathValue("tenant")))
		return
	}
	client := q.Get("client_id")
	if client == "" {
		s.aadError(w, http.StatusBadRequest, "invalid_request", 900144, "The request body must contain the following parameter: 'client_id'.")
		return
	}
	redirect := q.Get("redirect_uri")
	if redirect == "" {
		redirect = s.consentRedirectURI()
	}
	if redirect != s.consentRedirectURI() {
		s.aadError(w, http.StatusBadRequest, "invalid_request", 50011, fmt.Sprintf("The redirect URI '%s' specified in the request does not match the redirect URIs configured for the application '%s'.", redirect, client))
		return
	}
	if err := s.RestoreConsent(t.ID, client); err != nil {
		s.aadError(w, http.StatusBadRequest, "unauthorized_client", 700016, fmt.Sprintf("Application with identifier '%s' was not found in the directory '%s'.", client, t.ID))
		return
	}
	back := url.Values{"admin_consent": {"True"}, "tenant": {t.ID}}
	if st := q.Get("state"); st != "" {
		back.Set("state", st)
	}
	if sc := q.Get("scope"); sc != "" {
		back.Set("scope", sc)
	}
	http.Redirect(w, r, redirect+"?"+back.Encode(), http.StatusFound)
}

// consented is the page the registered redirect URI shows.
func (s *Stack) consented(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if q.Get("admin_consent") != "True" {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, "Admin consent was not granted: %s\n", q.Get("error_description"))
		return
	}
	fmt.Fprintf(w, "Admin consent granted in tenant %s: tokens issued from now on carry the app's application permissions.\n", q.Get("tenant"))
}
