package config

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// rateLimits: the client-side pacing.
func (r *reader) rateLimits(c *Config) {
	switch v := r.get(EnvRateLimits, "documented"); v {
	case "documented":
	case "off":
		c.RateLimits = map[string][]RateLimit{}
	default:
		c.RateLimits = map[string][]RateLimit{}
		for _, part := range strings.Split(v, ",") {
			bucket, spec, ok1 := strings.Cut(strings.TrimSpace(part), "=")
			n, per, ok2 := strings.Cut(spec, "/")
			count, err1 := strconv.Atoi(n)
			d, err2 := time.ParseDuration(per)
			if !ok1 || !ok2 || err1 != nil || err2 != nil || count < 1 || d <= 0 {
				r.problem(fmt.Sprintf("%s=%q: use documented, off, or bucket=N/duration pairs such as security=150/1m,hunting=45/1m", EnvRateLimits, v))
				break
			}
			c.RateLimits[bucket] = append(c.RateLimits[bucket], RateLimit{count, d})
		}
	}
}

// hunting: hunting-query.
func (r *reader) hunting(c *Config) {
	switch v := strings.ToLower(r.get(EnvHuntingAllowAdhoc, "false")); v {
	case "true", "1", "yes":
		c.HuntingAllowAdhoc = true
	case "false", "0", "no":
	default:
		r.problem(fmt.Sprintf("%s=%q: use true or false", EnvHuntingAllowAdhoc, v))
	}
	c.HuntingRequiredRole = r.get(EnvHuntingRequiredRole, "")
	c.HuntingAdhocRole = r.get(EnvHuntingAdhocRole, "")
	c.HuntingTenantRoles = map[string]string{}
	if v := r.get(EnvHuntingTenantRoles, ""); v != "" {
		for _, part := range strings.Split(v, ",") {
			tenant, role, ok := strings.Cut(strings.TrimSpace(part), "=")
			tenant, role = strings.ToLower(strings.TrimSpace(tenant)), strings.TrimSpace(role)
			switch {
			case !ok || tenant == "" || role == "":
				r.problem(fmt.Sprintf("%s=%q: use tenant=role pairs separated by commas, such as contoso.onmicrosoft.com=Hunting.Contoso", EnvHuntingTenantRoles, v))
			case !slices.ContainsFunc(c.Tenants, func(t string) bool { return strings.EqualFold(t, tenant) }):
				r.problem(fmt.Sprintf("%s names %q, which is not in %s (name each tenant as it is written there)", EnvHuntingTenantRoles, tenant, EnvTenantID))
			default:
				c.HuntingTenantRoles[tenant] = role
			}
		}
	}
	if c.HuntingAllowAdhoc && c.HuntingAdhocRole == "" {
		// With the function key alone, whoever holds it could run any KQL.
		r.problem(fmt.Sprintf("%s=true needs %s: the app role a caller must hold to send raw KQL (App Service Authentication or an API Gateway authorizer supplies it)",
			EnvHuntingAllowAdhoc, EnvHuntingAdhocRole))
	}
	c.HuntingMaxRows = r.integer(EnvHuntingMaxRows, 10000, 1, 100000, "use 1 to 100000 (the API returns at most 100,000 rows)")
	// Azure's front end ends an HTTP call at 230 s; API Gateway's HTTP APIs
	// end an integration at 30 s, so on Lambda the default leaves the rows
	// 5 s to stream (a Function URL allows more: set HUNTING_TIMEOUT).
	timeout := 200 * time.Second
	if _, lambda := r.lookup(EnvLambdaFunctionName); lambda {
		timeout = 25 * time.Second
	}
	c.HuntingTimeout = r.duration(EnvHuntingTimeout, timeout, time.Second, 225*time.Second)
}
