package doctor

import (
	"fmt"
	"os"
	"strings"

	"github.com/defender-functions/defender-functions/shared/advice"
)

// Off Azure (an operator's laptop, a build agent) there is no managed
// identity: azidentity then asks the instance metadata endpoint, and its
// long error (the request, the answer of whatever is there) says nothing
// an operator can act on. Such a failure is said once, in a line, with
// its fix; the later checks that need the identity are skipped, since no
// role can be missing from an identity that is not there.

// noManagedIdentity reports whether err is the managed identity's failure
// on a machine that has none: the App Service variables are absent, so
// azidentity fell back to the metadata endpoint, and that gave no token.
func noManagedIdentity(err error) bool {
	if err == nil || !strings.Contains(err.Error(), "ManagedIdentityCredential") {
		return false
	}
	return os.Getenv("IDENTITY_ENDPOINT") == "" && os.Getenv("MSI_ENDPOINT") == ""
}

// identityFailure reports check's failure when it is only the missing
// managed identity: the first such check fails with the verdict and its
// fix, the others are skipped. setting is what the check reaches.
func (k *checkup) identityFailure(r *report, check, setting string, err error) bool {
	if !noManagedIdentity(err) {
		return false
	}
	k.mu.Lock()
	said := k.noIdentity
	k.noIdentity = true
	k.mu.Unlock()
	if said {
		r.skip(check, "needs a managed identity, and this machine has none (above)")
		return true
	}
	r.fail(check, fmt.Errorf("no managed identity is available on this machine, and %s needs the Function App's (only Azure provides one)", setting),
		advice.Say(advice.NoManagedIdentity, nil))
	return true
}
