// Keycloak-shaped OpenID Connect provider for the integration tests.
//
// npm `oidc-provider` configured to look like Keycloak's `quickstart-realm`:
// Keycloak's endpoint paths under the issuer, the confidential client
// `apisix-quickstart-client`, the user `quickstart-user`, RS256 JWT access
// tokens that the introspection, revocation and userinfo endpoints accept,
// the password grant, a login page with Keycloak's element ids and an
// RP-initiated logout that needs no click. See README.md.
//
// Configuration (environment):
//   PORT              required, TCP port to listen on
//   HOST              listen address, default 127.0.0.1
//   ISSUER            default http://127.0.0.1:$PORT/realms/quickstart-realm
//   CLIENT_SECRET     default quickstart-client-secret-0123456789
//   KEY_FILE          optional JSON file with a private JWK (or {"keys":[...]})
//                     for signing; without it a fresh RSA-2048 key with a
//                     fresh kid is generated at every start
//   ACCESS_TOKEN_TTL  seconds, default 300
//   EXTRA_ROLES       integer, default 0; when > 0, ID tokens, access tokens
//                     and userinfo carry Keycloak's `realm_access.roles` with
//                     that many 40-character roles (large tokens, large
//                     browser sessions)
//   REDIRECT_URIS     the client's exact redirect URIs, space-separated;
//                     default the tutorial's
//                     http://localhost:9080/anything/callback. Any other is
//                     refused at the authorization endpoint, except that a
//                     loopback one (localhost, 127.0.0.1, [::1]) may come
//                     on any port (RFC 8252 7.3): tests run on free ports.
//   BACKCHANNEL_LOGOUT_URI  optional; the client's back-channel logout URI:
//                     turns on OpenID Connect Back-Channel Logout (discovery
//                     says so, ID tokens carry `sid`, ending a session at
//                     the end-session endpoint POSTs a logout token there)
//   BACKCHANNEL_LOGOUT_SESSION_REQUIRED  `false`: logout tokens carry `sub`
//                     only (default: `sid` too)
//
// Prints `ready <issuer>` on stdout once listening. Never logs tokens,
// secrets or passwords.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as querystring from 'node:querystring';

import Provider, { errors } from 'oidc-provider';

// ---------------------------------------------------------------- settings

function fail(message) {
  process.stderr.write(`provider: ${message}\n`);
  process.exit(2);
}

const PORT = Number.parseInt(process.env.PORT ?? '', 10);
if (!Number.isInteger(PORT) || PORT <= 0 || PORT > 65535) {
  fail('PORT must be set to a TCP port number');
}
const HOST = process.env.HOST || '127.0.0.1';
const ISSUER = (process.env.ISSUER || `http://127.0.0.1:${PORT}/realms/quickstart-realm`).replace(/\/+$/, '');
const CLIENT_ID = 'apisix-quickstart-client';
const CLIENT_SECRET = process.env.CLIENT_SECRET || 'quickstart-client-secret-0123456789';
const ACCESS_TOKEN_TTL = Number.parseInt(process.env.ACCESS_TOKEN_TTL || '300', 10);
if (!Number.isInteger(ACCESS_TOKEN_TTL) || ACCESS_TOKEN_TTL <= 0) {
  fail('ACCESS_TOKEN_TTL must be a positive number of seconds');
}
const EXTRA_ROLES = /^\d+$/.test(process.env.EXTRA_ROLES || '0')
  ? Number.parseInt(process.env.EXTRA_ROLES || '0', 10) : Number.NaN;
if (!Number.isInteger(EXTRA_ROLES) || EXTRA_ROLES > 10_000) {
  fail('EXTRA_ROLES must be a whole number from 0 to 10000');
}

// OpenID Connect Back-Channel Logout: when set, the client's
// backchannel_logout_uri (and the feature, and `sid` in ID tokens); the
// logout token names the session (`sid`) unless
// BACKCHANNEL_LOGOUT_SESSION_REQUIRED is `false` (then `sub` only).
const BACKCHANNEL_LOGOUT_URI = process.env.BACKCHANNEL_LOGOUT_URI || '';
const BACKCHANNEL_LOGOUT_SESSION_REQUIRED = process.env.BACKCHANNEL_LOGOUT_SESSION_REQUIRED !== 'false';
const REDIRECT_URIS = (process.env.REDIRECT_URIS || 'http://localhost:9080/anything/callback')
  .split(/\s+/).filter(Boolean);
for (const u of REDIRECT_URIS) {
  try {
    new URL(u);
  } catch {
    fail(`REDIRECT_URIS: ${JSON.stringify(u)} is not a URL`);
  }
}

let issuerUrl;
try {
  issuerUrl = new URL(ISSUER);
} catch {
  fail('ISSUER must be an absolute URL');
}
if (issuerUrl.search || issuerUrl.hash) fail('ISSUER must not have a query or fragment');
// Everything is served under the issuer's path, like Keycloak's /realms/<realm>.
const PREFIX = issuerUrl.pathname === '/' ? '' : issuerUrl.pathname;

// Keycloak's lifetimes (realm defaults): SSO idle 30 min, SSO max 10 h,
// login timeout 30 min, code 1 min; ID token lifetime = access token lifetime.
const REFRESH_TOKEN_TTL = 30 * 60;
const SESSION_TTL = 10 * 60 * 60;

const USER = {
  sub: '5b1c7d3e-8f4a-4c2b-9e6d-0a1b2c3d4e5f',
  username: 'quickstart-user',
  password: 'quickstart-user-pass',
  given_name: 'Quickstart',
  family_name: 'User',
  email: 'quickstart-user@example.com',
};

// Keycloak grants the client scopes `profile` and `email` by default; these
// are the scopes this realm knows. Unknown scopes are dropped silently.
const SCOPES = ['openid', 'offline_access', 'profile', 'email'];
const DEFAULT_SCOPE = 'profile email';

// Access tokens are JWTs for this resource server (Keycloak's `account`
// audience). Any other absolute URI passed as `resource` becomes the audience.
const DEFAULT_RESOURCE = `${ISSUER}/account`;
const DEFAULT_AUDIENCE = 'account';

const KC = '/protocol/openid-connect';
const ROUTES = {
  authorization: `${KC}/auth`,
  token: `${KC}/token`,
  userinfo: `${KC}/userinfo`,
  jwks: `${KC}/certs`,
  introspection: `${KC}/token/introspect`,
  revocation: `${KC}/revoke`,
  end_session: `${KC}/logout`,
  pushed_authorization_request: `${KC}/ext/par/request`,
  // Unused features, kept out of the way.
  backchannel_authentication: `${KC}/ext/ciba/auth`,
  code_verification: `${KC}/device`,
  device_authorization: `${KC}/auth/device`,
  registration: '/clients-registrations/openid-connect',
  challenge: `${KC}/challenge`,
  credential: `${KC}/credential`,
};
const LOGIN_PATH = `${PREFIX}/login-actions/authenticate`;

// ---------------------------------------------------------------- keys

function loadSigningKeys() {
  if (process.env.KEY_FILE) {
    let parsed;
    try {
      parsed = JSON.parse(fs.readFileSync(process.env.KEY_FILE, 'utf8'));
    } catch (err) {
      fail(`cannot read KEY_FILE: ${err.message}`);
    }
    const keys = Array.isArray(parsed.keys) ? parsed.keys : [parsed];
    return keys.map((jwk) => {
      if (jwk.kty !== 'RSA' || !jwk.d) fail('KEY_FILE must hold RSA private JWKs');
      return {
        ...jwk,
        kid: jwk.kid || crypto.createHash('sha256').update(JSON.stringify({ e: jwk.e, kty: 'RSA', n: jwk.n })).digest('base64url'),
        alg: 'RS256',
        use: 'sig',
      };
    });
  }
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return [{
    ...privateKey.export({ format: 'jwk' }),
    kid: crypto.randomBytes(16).toString('base64url'),
    alg: 'RS256',
    use: 'sig',
  }];
}

const SIGNING_KEYS = loadSigningKeys();
const PUBLIC_KEYS = new Map(SIGNING_KEYS.map((jwk) => [
  jwk.kid,
  crypto.createPublicKey({ key: { kty: jwk.kty, n: jwk.n, e: jwk.e }, format: 'jwk' }),
]));

function decodeSegment(segment) {
  return JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'));
}

function looksLikeJwt(value) {
  return typeof value === 'string' && /^[\w-]+\.[\w-]+\.[\w-]*$/.test(value);
}

// For a value shaped like a JWT: its `jti` when it is one of this provider's
// access tokens (signature, issuer), otherwise null. For other values:
// undefined. Expiry is left to the token store (as for opaque tokens).
function jtiOfOwnJwt(value) {
  if (!looksLikeJwt(value)) return undefined;
  try {
    const [h, p, s] = value.split('.');
    const header = decodeSegment(h);
    const key = PUBLIC_KEYS.get(header.kid);
    if (header.alg !== 'RS256' || !key) return null;
    const ok = crypto.verify('sha256', Buffer.from(`${h}.${p}`), key, Buffer.from(s, 'base64url'));
    if (!ok) return null;
    const payload = decodeSegment(p);
    if (payload.iss !== ISSUER || typeof payload.jti !== 'string' || !payload.jti) return null;
    return payload.jti;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------- storage

// An in-memory adapter without the stock adapter's ~1000-entry LRU limit.
const store = new Map(); // key -> { value, expiresAt (ms) | undefined }
const now = () => Math.floor(Date.now() / 1000);

function storeGet(key) {
  const entry = store.get(key);
  if (!entry) return undefined;
  if (entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
    store.delete(key);
    return undefined;
  }
  return entry.value;
}

function storeSet(key, value, expiresIn) {
  store.set(key, {
    value,
    expiresAt: typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : undefined,
  });
}

setInterval(() => {
  const t = Date.now();
  for (const [key, entry] of store) {
    if (entry.expiresAt !== undefined && entry.expiresAt <= t) store.delete(key);
  }
}, 60_000).unref();

const GRANTABLE = new Set([
  'AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest', 'ClientCredentials',
]);

class MemoryAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    storeSet(key, payload, expiresIn);
    if (this.model === 'Session' && payload.uid) {
      storeSet(`sessionUid:${payload.uid}`, id, expiresIn);
    }
    if (payload.userCode) {
      storeSet(`userCode:${payload.userCode}`, id, expiresIn);
    }
    if (GRANTABLE.has(this.model) && payload.grantId) {
      const grantKey = `grant:${payload.grantId}`;
      const members = storeGet(grantKey) ?? new Set();
      members.add(key);
      storeSet(grantKey, members);
    }
  }

  async find(id) {
    return storeGet(this.key(id));
  }

  async findByUid(uid) {
    const id = storeGet(`sessionUid:${uid}`);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const id = storeGet(`userCode:${userCode}`);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const payload = storeGet(this.key(id));
    if (payload) payload.consumed = now();
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    const grantKey = `grant:${grantId}`;
    const members = storeGet(grantKey);
    if (!members) return;
    for (const key of members) store.delete(key);
    store.delete(grantKey);
  }
}

// ---------------------------------------------------------------- accounts

// EXTRA_ROLES > 0: Keycloak's realm-roles claim, `role-0001-…` to
// `role-NNNN-…`, each padded to 40 characters, so that tokens get large.
const ROLE_PADDING = 'abcdefghijklmnopqrstuvwxyz0123456789';
const REALM_ACCESS = EXTRA_ROLES > 0
  ? {
    roles: Array.from({ length: EXTRA_ROLES }, (_, i) => {
      const name = `role-${String(i + 1).padStart(4, '0')}-`;
      return name + ROLE_PADDING.slice(0, 40 - name.length);
    }),
  }
  : undefined;

function accountClaims(scope) {
  const scopes = new Set(String(scope || '').split(' '));
  // preferred_username comes with every token, as with Keycloak's defaults.
  const claims = { sub: USER.sub, preferred_username: USER.username };
  if (scopes.has('profile')) {
    Object.assign(claims, {
      name: `${USER.given_name} ${USER.family_name}`,
      given_name: USER.given_name,
      family_name: USER.family_name,
    });
  }
  if (scopes.has('email')) {
    Object.assign(claims, { email: USER.email, email_verified: true });
  }
  return claims;
}

function findAccount(_ctx, sub) {
  if (sub !== USER.sub) return undefined;
  return {
    accountId: USER.sub,
    async claims() {
      // Scope filtering happens in oidc-provider (the `claims` mapping below).
      const claims = accountClaims('openid profile email');
      if (REALM_ACCESS) claims.realm_access = REALM_ACCESS;
      return claims;
    },
  };
}

function checkPassword(username, password) {
  if (typeof username !== 'string' || typeof password !== 'string') return false;
  const nameOk = username.toLowerCase() === USER.username || username.toLowerCase() === USER.email;
  const a = crypto.createHash('sha256').update(password).digest();
  const b = crypto.createHash('sha256').update(USER.password).digest();
  return nameOk && crypto.timingSafeEqual(a, b);
}

// ---------------------------------------------------------------- pages

function escapeHtml(value) {
  return String(value ?? '').replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  }[c]));
}

const STYLE = 'body{font-family:sans-serif;margin:2em auto;max-width:26em}'
  + 'input{display:block;width:100%;margin:.3em 0 1em;padding:.4em;box-sizing:border-box}'
  + '#input-error{color:#c00;display:block;margin-bottom:1em}';

function page(title, body) {
  return `<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>${escapeHtml(title)}</title><style>${STYLE}</style></head>
<body>
<h1 id="kc-page-title">${escapeHtml(title)}</h1>
${body}
</body>
</html>
`;
}

function loginPage(action, username, error) {
  return page('Sign in to your account', `<div id="kc-form">
<form id="kc-form-login" onsubmit="login.disabled = true; return true;" action="${escapeHtml(action)}" method="post">
<label for="username">Username or email</label>
<input tabindex="1" id="username" name="username" value="${escapeHtml(username)}" type="text" autofocus autocomplete="off"${error ? ' aria-invalid="true"' : ''}>
<label for="password">Password</label>
<input tabindex="2" id="password" name="password" type="password" autocomplete="off"${error ? ' aria-invalid="true"' : ''}>
${error ? `<span id="input-error" aria-live="polite">${escapeHtml(error)}</span>\n` : ''}<input tabindex="4" name="login" id="kc-login" type="submit" value="Sign In">
</form>
</div>`);
}

// ---------------------------------------------------------------- provider

async function getResourceServerInfo(_ctx, resourceIndicator) {
  return {
    scope: SCOPES.join(' '),
    audience: resourceIndicator === DEFAULT_RESOURCE ? DEFAULT_AUDIENCE : resourceIndicator,
    accessTokenTTL: ACCESS_TOKEN_TTL,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: 'RS256' } },
  };
}

async function loadExistingGrant(ctx) {
  // Consent is implied (Keycloak's "Consent required: off").
  const { client, session } = ctx.oidc;
  const grantId = ctx.oidc.result?.consent?.grantId || session.grantIdFor(client.clientId);
  let grant = grantId ? await ctx.oidc.provider.Grant.find(grantId) : undefined;
  if (!grant || grant.accountId !== session.accountId || grant.clientId !== client.clientId) {
    grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId: session.accountId });
  }
  grant.addOIDCScope(SCOPES.join(' '));
  for (const resource of Object.keys(ctx.oidc.resourceServers ?? {})) {
    grant.addResourceScope(resource, SCOPES.join(' '));
  }
  await grant.save();
  return grant;
}

const configuration = {
  clients: [{
    client_id: CLIENT_ID,
    client_secret: CLIENT_SECRET,
    client_name: 'APISIX quickstart client',
    // Exact redirect URIs, see redirectUriAllowed below.
    redirect_uris: REDIRECT_URIS,
    post_logout_redirect_uris: ['http://127.0.0.1/logged-out'],
    grant_types: ['authorization_code', 'refresh_token', 'client_credentials', 'password'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic', // client_secret_post works too
    scope: SCOPES.join(' '),
    ...(BACKCHANNEL_LOGOUT_URI ? {
      backchannel_logout_uri: BACKCHANNEL_LOGOUT_URI,
      backchannel_logout_session_required: BACKCHANNEL_LOGOUT_SESSION_REQUIRED,
    } : {}),
  }],
  clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
  allowOmittingSingleRegisteredRedirectUri: false,
  responseTypes: ['code'],
  scopes: SCOPES,
  claims: {
    // realm_access (EXTRA_ROLES) goes with openid: ID token and userinfo.
    openid: REALM_ACCESS ? ['sub', 'preferred_username', 'realm_access'] : ['sub', 'preferred_username'],
    profile: ['name', 'given_name', 'family_name'],
    email: ['email', 'email_verified'],
    acr: null,
    sid: null,
    auth_time: null,
    iss: null,
  },
  cookies: {
    keys: [crypto.randomBytes(32).toString('base64url')],
  },
  jwks: { keys: SIGNING_KEYS },
  adapter: MemoryAdapter,
  findAccount,
  loadExistingGrant,
  routes: ROUTES,
  pkce: { required: () => false },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: {
      enabled: true,
      allowedPolicy: async () => true,
    },
    revocation: {
      enabled: true,
      allowedPolicy: async (_ctx, client, token) => {
        if (token.clientId !== client.clientId) {
          throw new errors.UnauthorizedClient('client is not authorized to revoke the presented token');
        }
        return true;
      },
    },
    userinfo: { enabled: true },
    backchannelLogout: { enabled: Boolean(BACKCHANNEL_LOGOUT_URI) },
    rpInitiatedLogout: {
      enabled: true,
      // Only reached if the no-click logout below did not apply.
      logoutSource: async (ctx, form) => {
        ctx.body = page('Logging out', `${form}<button type="submit" form="op.logoutForm" value="yes" name="logout" id="kc-logout">Logout</button>`);
      },
      postLogoutSuccessSource: async (ctx) => {
        ctx.body = page('You are logged out', '<p id="kc-logout-success">You are logged out.</p>');
      },
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: async (_ctx, _client, oneOf) => {
        if (Array.isArray(oneOf) && oneOf.length) {
          return oneOf.includes(DEFAULT_RESOURCE) ? DEFAULT_RESOURCE : oneOf[0];
        }
        return oneOf || DEFAULT_RESOURCE;
      },
      useGrantedResource: async () => true,
      getResourceServerInfo,
    },
  },
  formats: {
    customizers: {
      // Runs for every JWT access token: shape the header like Keycloak's and
      // keep the token model under its jti so that introspection, revocation
      // and userinfo can find it (Keycloak accepts its own JWTs there).
      async jwt(_ctx, token, jwt) {
        jwt.header = { typ: 'JWT' };
        const stored = {};
        for (const name of token.constructor.IN_PAYLOAD) {
          if (token[name] !== undefined) stored[name] = token[name];
        }
        stored.jti = jwt.payload.jti;
        stored.iat = jwt.payload.iat;
        stored.exp = jwt.payload.exp;
        await token.constructor.adapter.upsert(stored.jti, stored, Math.max(stored.exp - now(), 1));
      },
    },
  },
  extraTokenClaims: async (_ctx, token) => {
    const extra = { typ: 'Bearer', azp: token.clientId };
    if (token.sid) extra.sid = token.sid;
    if (token.accountId === USER.sub) {
      Object.assign(extra, accountClaims(token.scope));
      delete extra.sub;
    } else if (!token.accountId) {
      extra.preferred_username = `service-account-${token.clientId}`;
    }
    if (REALM_ACCESS) extra.realm_access = REALM_ACCESS;
    return extra;
  },
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: false, // Keycloak's default: refresh tokens stay usable
  expiresWithSession: async (_ctx, source) => !source.scopes.has('offline_access'),
  ttl: {
    AccessToken: ACCESS_TOKEN_TTL,
    ClientCredentials: ACCESS_TOKEN_TTL,
    IdToken: ACCESS_TOKEN_TTL,
    AuthorizationCode: 60,
    RefreshToken: REFRESH_TOKEN_TTL,
    Interaction: 30 * 60,
    Session: SESSION_TTL,
    Grant: SESSION_TTL,
    DeviceCode: 600,
    BackchannelAuthenticationRequest: 600,
    PreAuthorizedCode: 600,
  },
  interactions: {
    url: async (_ctx, interaction) => `${LOGIN_PATH}/${interaction.uid}`,
  },
  discovery: {
    introspection_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
    revocation_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
    backchannel_logout_supported: Boolean(BACKCHANNEL_LOGOUT_URI),
    frontchannel_logout_supported: false,
  },
  clientBasedCORS: () => true,
  // oidc-provider refuses to call loopback addresses (SSRF protection);
  // the gateway under test listens on 127.0.0.1.
  ...(BACKCHANNEL_LOGOUT_URI ? {
    fetch: (url, options) => {
      const { dispatcher: _ssrfGuard, ...rest } = options;
      return fetch(url, rest);
    },
  } : {}),
  renderError: async (ctx, out) => {
    ctx.type = 'html';
    ctx.body = page('We are sorry...', `<p id="kc-error-message">${escapeHtml(out.error)}: ${escapeHtml(out.error_description)}</p>`);
  },
};

const provider = new Provider(ISSUER, configuration);
// Endpoint URLs follow ISSUER, not the Host header (like Keycloak with a
// fixed hostname); see the request handler below.
provider.proxy = true;

// Post-logout redirect URIs (the realm's `post.logout.redirect.uris: *`):
// any absolute http(s) URL.
function anyHttpUrl(value) {
  try {
    const url = new URL(value);
    return (url.protocol === 'http:' || url.protocol === 'https:') && !url.hash;
  } catch {
    return false;
  }
}
// Redirect URIs: exactly one of REDIRECT_URIS (scheme, host, port, path,
// query), the port free for loopback hosts (RFC 8252 7.3). Never `*`: a
// provider that sends codes anywhere lets an attacker collect them.
const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]']);
function registeredRedirectUri(value) {
  let url;
  try {
    url = new URL(value);
  } catch {
    return false;
  }
  if (url.hash) {
    return false;
  }
  return REDIRECT_URIS.some((r) => {
    const want = new URL(r);
    return url.protocol === want.protocol
      && url.hostname === want.hostname
      && (url.port === want.port || LOOPBACK.has(want.hostname))
      && url.pathname === want.pathname
      && url.search === want.search;
  });
}
provider.Client.prototype.redirectUriAllowed = registeredRedirectUri;
provider.Client.prototype.postLogoutRedirectUriAllowed = anyHttpUrl;
// Keycloak always puts the session id (sid) into ID tokens.
provider.Client.prototype.includeSid = () => true;

// Revoking one access token revokes just that token (Keycloak); stock
// oidc-provider would revoke every token of its grant. Revoking a refresh
// token still ends the whole grant (Keycloak ends the client session).
for (const model of [provider.AccessToken, provider.RefreshToken, provider.AuthorizationCode]) {
  const revokeByGrantId = model.revokeByGrantId.bind(model);
  Object.defineProperty(model, 'revokeByGrantId', {
    configurable: true,
    writable: true,
    value: async (grantId) => {
      const ctx = Provider.ctx;
      if (ctx?.oidc?.route === 'revocation' && ctx.oidc.entities.AccessToken) return undefined;
      return revokeByGrantId(grantId);
    },
  });
}

// Userinfo: accept the JWT access tokens (looked up by jti) and ignore their
// audience, which stock oidc-provider refuses at userinfo.
{
  const { AccessToken } = provider;
  const find = AccessToken.find.bind(AccessToken);
  Object.defineProperty(AccessToken, 'find', {
    configurable: true,
    writable: true,
    value: async (value, options) => {
      const jti = jtiOfOwnJwt(value);
      if (jti === null) return undefined;
      const token = await find(jti ?? value, options);
      if (token && Provider.ctx?.oidc?.route === 'userinfo') delete token.aud;
      return token;
    },
  });
}

// ---------------------------------------------------------------- password grant

const passwordGrantParams = new Set(['username', 'password', 'scope', 'resource']);

async function passwordGrant(ctx) {
  const { client, params } = ctx.oidc;
  if (!client.grantTypeAllowed('password')) {
    throw new errors.UnauthorizedClient('requested grant type is not allowed for this client');
  }
  if (!params.username || !params.password) {
    throw new errors.InvalidRequest('username and password are required');
  }
  if (!checkPassword(params.username, params.password)) {
    const err = new errors.CustomOIDCProviderError('invalid_grant', 'Invalid user credentials');
    err.status = 401;
    err.statusCode = 401;
    throw err;
  }
  const resource = params.resource || DEFAULT_RESOURCE;
  if (typeof resource !== 'string' || !URL.canParse(resource)) {
    throw new errors.InvalidTarget('resource indicator must be an absolute URI');
  }
  const requested = params.scope ? params.scope.split(' ').filter(Boolean) : DEFAULT_SCOPE.split(' ');
  const scope = [...new Set(requested)].filter((s) => SCOPES.includes(s)).join(' ');

  const account = await findAccount(ctx, USER.sub);
  ctx.oidc.entity('Account', account);

  const { Grant, AccessToken, RefreshToken, IdToken, ResourceServer } = provider;
  const grant = new Grant({ accountId: account.accountId, clientId: client.clientId });
  grant.addOIDCScope(SCOPES.join(' '));
  grant.addResourceScope(resource, SCOPES.join(' '));
  const grantId = await grant.save();
  ctx.oidc.entity('Grant', grant);

  const authTime = now();
  const at = new AccessToken({
    accountId: account.accountId,
    client,
    grantId,
    gty: 'password',
    expiresWithSession: false,
  });
  at.resourceServer = new ResourceServer(resource, await getResourceServerInfo(ctx, resource));
  at.scope = scope || undefined;
  ctx.oidc.entity('AccessToken', at);
  const accessToken = await at.save();

  const rt = new RefreshToken({
    accountId: account.accountId,
    client,
    grantId,
    gty: 'password',
    scope: scope || undefined,
    resource,
    rotations: 0,
    authTime,
    expiresWithSession: false,
  });
  ctx.oidc.entity('RefreshToken', rt);
  const refreshToken = await rt.save();

  let idToken;
  if (at.scopes.has('openid')) {
    const token = new IdToken({ ...await account.claims('id_token', scope), auth_time: authTime }, { ctx });
    token.scope = scope;
    token.mask = {};
    token.rejected = [];
    idToken = await token.issue({ use: 'idtoken' });
  }

  ctx.body = {
    access_token: accessToken,
    expires_in: at.expiration,
    refresh_expires_in: REFRESH_TOKEN_TTL,
    refresh_token: refreshToken,
    token_type: 'Bearer',
    id_token: idToken,
    'not-before-policy': 0,
    scope: at.scope,
  };
}

provider.registerGrantType('password', passwordGrant, passwordGrantParams);

// ---------------------------------------------------------------- Keycloak touches

const MAX_BODY = 56 * 1024;

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY) throw new Error('request entity too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

provider.use(async (ctx, next) => {
  const path = ctx.path;

  // Introspection and revocation of this provider's JWT access tokens: the
  // stock endpoints refuse JWTs, so swap a verified JWT for its jti (the key
  // the token model is stored under, see formats.customizers.jwt). A JWT that
  // does not verify is swapped for a value that matches nothing (active:false).
  const tokenEndpoint = ctx.method === 'POST'
    && (path === ROUTES.introspection || path === ROUTES.revocation)
    && ctx.is('application/x-www-form-urlencoded');
  let jti;
  if (tokenEndpoint) {
    let raw;
    try {
      raw = await readBody(ctx.req);
    } catch {
      throw new errors.InvalidRequest('failed to parse the request body');
    }
    const form = querystring.parse(raw);
    jti = jtiOfOwnJwt(form.token);
    if (jti !== undefined) {
      form.token = jti ?? `invalid-${crypto.randomBytes(8).toString('hex')}`;
    }
    ctx.req.body = querystring.stringify(form);
  }

  await next();

  if (path === ROUTES.introspection && ctx.status === 200 && ctx.body?.active === true) {
    // Keycloak's introspection answers carry these too.
    if (jti && !ctx.body.jti) ctx.body.jti = jti;
    if (ctx.body.sub === undefined) ctx.body.sub = ctx.body.client_id;
    if (ctx.body.preferred_username && !ctx.body.username) ctx.body.username = ctx.body.preferred_username;
    if (!ctx.body.azp) ctx.body.azp = ctx.body.client_id;
  }

  // RP-initiated logout without a confirmation click (Keycloak logs out
  // straight away when given id_token_hint or client_id): once oidc-provider
  // accepted the request (id_token_hint, client_id, post_logout_redirect_uri
  // checked), end the session here and redirect.
  if (path === ROUTES.end_session && ctx.status === 200 && ctx.oidc?.route === 'end_session') {
    const { session, params } = ctx.oidc;
    if (BACKCHANNEL_LOGOUT_URI && session.accountId) {
      // As oidc-provider's own end-session confirmation does: a logout
      // token to each client of the session that has a back-channel URI,
      // before the redirect (so a test sees its effect right after).
      for (const clientId of Object.keys(session.authorizations ?? {})) {
        const client = await provider.Client.find(clientId);
        if (client?.backchannelLogoutUri) {
          await client.backchannelLogout(session.accountId, session.sidFor(clientId)).then(
            () => process.stderr.write(`back-channel logout sent to ${clientId}\n`),
            (err) => process.stderr.write(`back-channel logout to ${clientId} failed: ${err.message}\n`),
          );
        }
      }
    }
    if (session.accountId) {
      const grantIds = Object.values(session.authorizations ?? {}).map((a) => a.grantId).filter(Boolean);
      for (const grantId of grantIds) {
        await Promise.all([
          provider.AccessToken.revokeByGrantId(grantId),
          provider.RefreshToken.revokeByGrantId(grantId),
          provider.AuthorizationCode.revokeByGrantId(grantId),
          provider.Grant.adapter.destroy(grantId),
        ]);
      }
    }
    await session.destroy();
    ctx.cookies.set(provider.cookieName('session'), null);
    let target;
    if (params.post_logout_redirect_uri) {
      const url = new URL(params.post_logout_redirect_uri);
      if (params.state != null) url.searchParams.set('state', params.state);
      target = url.href;
    } else {
      target = new URL(`${PREFIX}${ROUTES.end_session}/success`, ISSUER).href;
    }
    ctx.status = 302;
    ctx.redirect(target);
  }
});

// ---------------------------------------------------------------- login pages

function send(res, status, headers, body) {
  res.writeHead(status, {
    'Cache-Control': 'no-store, must-revalidate, max-age=0',
    ...headers,
  });
  res.end(body);
}

async function handleLogin(req, res) {
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch {
    send(res, 400, { 'Content-Type': 'text/html; charset=utf-8' },
      page('We are sorry...', '<p id="kc-error-message">Your login attempt timed out. Login will start from the beginning.</p>'));
    return;
  }
  const action = `${LOGIN_PATH}/${details.uid}`;
  const { prompt } = details;

  if (prompt.name === 'consent') {
    // Consent is implied; normally loadExistingGrant already covers it.
    const { Grant } = provider;
    let grant = details.grantId ? await Grant.find(details.grantId) : undefined;
    grant ??= new Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
    grant.addOIDCScope(SCOPES.join(' '));
    for (const [resource] of Object.entries(prompt.details.missingResourceScopes ?? {})) {
      grant.addResourceScope(resource, SCOPES.join(' '));
    }
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    return;
  }

  if (req.method === 'GET') {
    send(res, 200, { 'Content-Type': 'text/html; charset=utf-8' },
      loginPage(action, details.params.login_hint ?? '', undefined));
    return;
  }
  if (req.method !== 'POST') {
    send(res, 405, { Allow: 'GET, POST' }, '');
    return;
  }
  let form;
  try {
    form = querystring.parse(await readBody(req));
  } catch {
    send(res, 413, {}, '');
    return;
  }
  const username = typeof form.username === 'string' ? form.username : '';
  if (!checkPassword(username, form.password)) {
    send(res, 200, { 'Content-Type': 'text/html; charset=utf-8' },
      loginPage(action, username, 'Invalid username or password.'));
    return;
  }
  await provider.interactionFinished(req, res, {
    login: { accountId: USER.sub, amr: ['pwd'], remember: true },
  }, { mergeWithLastSubmission: false });
}

// ---------------------------------------------------------------- server

const callback = provider.callback();
const forwardedProto = issuerUrl.protocol.slice(0, -1);

const server = http.createServer((req, res) => {
  const url = req.url || '/';
  const pathname = url.split('?')[0];

  if (pathname === LOGIN_PATH || pathname.startsWith(`${LOGIN_PATH}/`)) {
    handleLogin(req, res).catch((err) => {
      process.stderr.write(`provider: login page error: ${err.message}\n`);
      if (!res.headersSent) send(res, 500, {}, '');
      else res.destroy();
    });
    return;
  }

  if (PREFIX && pathname !== PREFIX && !pathname.startsWith(`${PREFIX}/`)) {
    send(res, 404, { 'Content-Type': 'application/json' }, JSON.stringify({ error: 'Unable to find matching target resource method' }));
    return;
  }

  // Keycloak also takes the logout request as a form POST; oidc-provider
  // only allows that with SameSite=None cookies, so turn it into the GET.
  if (req.method === 'POST' && pathname === `${PREFIX}${ROUTES.end_session}`
      && /^application\/x-www-form-urlencoded/i.test(req.headers['content-type'] || '')) {
    readBody(req).then((raw) => {
      const query = new URLSearchParams(url.split('?')[1] || '');
      for (const [k, v] of new URLSearchParams(raw)) query.append(k, v);
      req.method = 'GET';
      delete req.headers['content-type'];
      delete req.headers['content-length'];
      delete req.headers['transfer-encoding'];
      mount(req, res, `${pathname}?${query}`);
    }, () => send(res, 413, {}, ''));
    return;
  }
  mount(req, res, url);
});

function mount(req, res, url) {
  // Mount the provider under the issuer's path; URLs it builds follow ISSUER.
  req.originalUrl = url;
  req.url = url.slice(PREFIX.length) || '/';
  if (req.url.startsWith('?')) req.url = `/${req.url}`;
  req.headers['x-forwarded-host'] = issuerUrl.host;
  req.headers['x-forwarded-proto'] = forwardedProto;
  callback(req, res);
}

server.keepAliveTimeout = 5_000;
server.on('error', (err) => fail(`cannot listen on ${HOST}:${PORT}: ${err.message}`));
server.listen(PORT, HOST, () => {
  process.stdout.write(`ready ${ISSUER}\n`);
});

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 1_000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
