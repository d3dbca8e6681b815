# The Python sample of Microsoft's Defender XDR app guide (v1 endpoint with
# "resource"), with only the host changed. It prints the decoded roles claim,
# never the token. SSL_CERT_FILE makes urllib trust the devstack CA.
import base64
import json
import os
import urllib.parse
import urllib.request

tenantId = os.environ["TENANT_ID"]
appId = os.environ["CLIENT_ID"]
appSecret = os.environ["CLIENT_SECRET"]

url = "%s/%s/oauth2/token" % (os.environ["AUTHORITY"], tenantId)

resourceAppIdUri = 'https://api.security.microsoft.com'

body = {
    'resource' : resourceAppIdUri,
    'client_id' : appId,
    'client_secret' : appSecret,
    'grant_type' : 'client_credentials'
}

data = urllib.parse.urlencode(body).encode("utf-8")

req = urllib.request.Request(url, data)
response = urllib.request.urlopen(req)
jsonResponse = json.loads(response.read())
aadToken = jsonResponse["access_token"]

payload = aadToken.split(".")[1]
payload += "=" * (-len(payload) % 4)
claims = json.loads(base64.urlsafe_b64decode(payload))
print(json.dumps({"roles": claims.get("roles", []), "aud": claims["aud"], "expires_in": jsonResponse["expires_in"]}))
