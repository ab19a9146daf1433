// A deliberately misbehaving OpenID provider for the relying-party
// certification cases (tests/tests/rp_cert.rs). The one place where a
// provider of our own is right: a real one cannot be made to misbehave.
// Node's standard library only; real HTTP, real RSA signatures.
//
// Every case is a realm of its own under /<realm>/ (its own issuer,
// discovery document, JWKS, endpoints), so the filter's caches of one case
// never mix with another's. A realm is `<anything>.<case>` (e.g.
// `login.rotation`, `bearer.rotation`) or just `<case>`:
//
//   GET  /<case>/.well-known/openid-configuration
//   GET  /<case>/jwks
//   GET  /<case>/auth       302 straight back to redirect_uri with a code
//                           (no login page: the cases are about what comes
//                           after), remembering the nonce for the ID token
//   POST /<case>/token      the ID token (and access token) crafted per case
//   GET  /<case>/userinfo
//   GET  /<case>/bearer     an access token crafted per case, for the
//                           bearer-token path
//
// `rotation` signs with a second key from its second token on and adds it
// to its JWKS then; `rotation-down` switches keys too but its JWKS
// endpoint answers 500 from its second request on.
//
// Provider-abuse cases (tests/tests/provider_abuse.rs): realm `slow`
// answers its JWKS after a second; `bigjwks` and `bigdisc` pad the JWKS or
// the discovery document to 2 MiB (valid JSON, spaces after it).
//
// Environment: PORT (required). Prints `ready` once listening.

import * as crypto from 'node:crypto';
import * as http from 'node:http';

const PORT = Number.parseInt(process.env.PORT ?? '', 10);
if (!Number.isInteger(PORT)) {
  process.stderr.write('rogue: PORT must be set\n');
  process.exit(2);
}
const BASE = `http://127.0.0.1:${PORT}`;
const CLIENT_ID = 'rp-client';
const CLIENT_SECRET = 'rp-client-secret-0123456789';

const b64 = (x) => Buffer.from(x).toString('base64url');
const now = () => Math.floor(Date.now() / 1000);

function rsaKey(kid) {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...publicKey.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' };
  return { kid, privateKey, jwk };
}
const KEY1 = rsaKey('key-1');
const KEY2 = rsaKey('key-2');

// Per realm: how many tokens it issued (the key rotation case switches keys
// after the first) and the nonce of each code.
const realms = new Map();
function realm(name) {
  if (!realms.has(name)) realms.set(name, { issued: 0, nonces: new Map() });
  return realms.get(name);
}

function sign(header, claims, key) {
  const input = `${b64(JSON.stringify(header))}.${b64(JSON.stringify(claims))}`;
  const sig = crypto.sign('sha256', Buffer.from(input), key.privateKey);
  return `${input}.${b64(sig)}`;
}

/// A token of realm `name`: `kind` is "id" (ID token) or "access".
function craft(name, kind, nonce) {
  const kase = caseOf(name);
  const r = realm(name);
  const issuer = `${BASE}/${name}`;
  const t = now();
  const claims = {
    iss: issuer,
    sub: 'rp-user',
    aud: kind === 'id' ? CLIENT_ID : ['account', CLIENT_ID],
    azp: CLIENT_ID,
    exp: t + 300,
    iat: t,
    scope: 'openid profile',
  };
  if (kind === 'id' && nonce !== undefined) claims.nonce = nonce;
  let key = KEY1;
  let header = { alg: 'RS256', typ: 'JWT', kid: key.kid };
  switch (kase) {
    case 'iss-mismatch': claims.iss = 'https://evil.example/realms/r'; break;
    // The issuer a discovery URL on `localhost` stands for, while the
    // document (served on any host name) names 127.0.0.1's
    // (tests/tests/apisix_compat.rs).
    case 'iss-localhost': claims.iss = issuer.replace('//127.0.0.1:', '//localhost:'); break;
    case 'aud-mismatch': claims.aud = 'someone-else'; break;
    case 'expired': claims.exp = t - 3600; claims.iat = t - 7200; break;
    case 'exp-missing': delete claims.exp; break;
    case 'iat-missing': delete claims.iat; break;
    case 'iat-future': claims.iat = t + 3600; break;
    case 'iat-stale': claims.iat = t - 30 * 24 * 3600; break;
    case 'sub-missing': delete claims.sub; break;
    case 'nonce-invalid': if (kind === 'id') claims.nonce = 'not-the-nonce'; break;
    case 'nonce-missing': delete claims.nonce; break;
    case 'kid-absent-single':
    case 'kid-absent-multiple': delete header.kid; break;
    case 'rotation':
    case 'rotation-down':
      if (r.issued >= 1) { key = KEY2; header = { ...header, kid: KEY2.kid }; }
      break;
    default: break;
  }
  r.issued += 1;
  if (kase === 'sig-none') {
    return `${b64(JSON.stringify({ alg: 'none', typ: 'JWT' }))}.${b64(JSON.stringify(claims))}.`;
  }
  if (kase === 'sig-hs256') {
    const input = `${b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${b64(JSON.stringify(claims))}`;
    const mac = crypto.createHmac('sha256', CLIENT_SECRET).update(input).digest();
    return `${input}.${b64(mac)}`;
  }
  const token = sign(header, claims, key);
  if (kase === 'bad-sig') {
    const [h, p, s] = token.split('.');
    const bytes = Buffer.from(s, 'base64url');
    bytes[10] ^= 0xff;
    return `${h}.${p}.${b64(bytes)}`;
  }
  return token;
}

function caseOf(name) {
  return name.includes('.') ? name.slice(name.lastIndexOf('.') + 1) : name;
}

function jwks(name) {
  const kase = caseOf(name);
  const r = realm(name);
  if (kase === 'kid-absent-multiple') return { keys: [KEY1.jwk, KEY2.jwk] };
  if (kase === 'rotation' && r.issued >= 2) return { keys: [KEY1.jwk, KEY2.jwk] };
  return { keys: [KEY1.jwk] };
}

function discovery(name) {
  const issuer = `${BASE}/${name}`;
  return {
    issuer,
    authorization_endpoint: `${issuer}/auth`,
    token_endpoint: `${issuer}/token`,
    userinfo_endpoint: `${issuer}/userinfo`,
    jwks_uri: `${issuer}/jwks`,
    end_session_endpoint: `${issuer}/logout`,
    response_types_supported: ['code'],
    subject_types_supported: ['public'],
    id_token_signing_alg_values_supported: ['RS256'],
  };
}

// --- provider-abuse cases ---------------------------------------------
const SLOW_MS = 1000;
const BIG = 2 * 1024 * 1024;
const padded = (text) => text + ' '.repeat(Math.max(0, BIG - text.length));

/// The body of `doc` for realm `name`, padded when the case says so.
function documentText(name, doc, which) {
  const text = JSON.stringify(doc);
  return caseOf(name) === `big${which}` ? padded(text) : text;
}
// --- end of provider-abuse cases --------------------------------------

function send(res, status, body, headers = {}) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(text);
}

// ---------------------------------------------------------------------
// Session cases (tests/tests/session_security.rs). Realms whose case
// starts with `session-` get their token endpoint from here (both grants:
// authorization_code and refresh_token); everything else (discovery, JWKS,
// auth, userinfo) is the common code above.
//
//   session-ok              a normal login; refresh answers are valid
//   session-refresh-ok      the same (named for the refresh test)
//   session-refresh-bad-sig a refreshed ID token with a broken signature
//   session-refresh-other-sub a refreshed ID token about another user
//                           (session-refresh-*: the login's access token
//                           has expires_in 1, refreshed ones 300)
//   session-token-ctl       the access token carries CR LF and a header
//   session-jwt-exp         no expires_in; the access token is a JWT whose
//                           exp is 2 s ahead; refreshes are refused
// ---------------------------------------------------------------------

function sessionIdToken(name, nonce, sub) {
  const t = now();
  const claims = {
    iss: `${BASE}/${name}`, sub, aud: CLIENT_ID, azp: CLIENT_ID, exp: t + 300, iat: t,
  };
  if (nonce !== undefined) claims.nonce = nonce;
  return sign({ alg: 'RS256', typ: 'JWT', kid: KEY1.kid }, claims, KEY1);
}

function sessionCase(name, what, body, res) {
  const kase = caseOf(name);
  if (!kase.startsWith('session-') || what !== 'token') return false;
  const r = realm(name);
  const form = new URLSearchParams(body);
  const random = () => crypto.randomBytes(24).toString('base64url');
  if (form.get('grant_type') === 'refresh_token') {
    if (kase === 'session-jwt-exp') { send(res, 400, { error: 'invalid_grant' }); return true; }
    let id = sessionIdToken(name, undefined, kase === 'session-refresh-other-sub' ? 'someone-else' : 'rp-user');
    if (kase === 'session-refresh-bad-sig') {
      const [h, p, sig] = id.split('.');
      const bytes = Buffer.from(sig, 'base64url');
      bytes[10] ^= 0xff;
      id = `${h}.${p}.${b64(bytes)}`;
    }
    send(res, 200, {
      access_token: random(), id_token: id, refresh_token: random(), token_type: 'Bearer', expires_in: 300,
    });
    return true;
  }
  const nonce = r.nonces.get(form.get('code') ?? '');
  if (nonce === undefined) { send(res, 400, { error: 'invalid_grant' }); return true; }
  r.nonces.delete(form.get('code'));
  const answer = {
    access_token: random(),
    id_token: sessionIdToken(name, nonce, 'rp-user'),
    refresh_token: random(),
    token_type: 'Bearer',
    expires_in: 300,
  };
  // Refresh cases: the access token expires at once, the next request
  // refreshes.
  if (kase.startsWith('session-refresh-')) answer.expires_in = 1;
  if (kase === 'session-token-ctl') answer.access_token = 'at\r\nx-injected: yes';
  if (kase === 'session-jwt-exp') {
    delete answer.expires_in;
    const t = now();
    answer.access_token = sign({ alg: 'RS256', typ: 'JWT', kid: KEY1.kid },
      { iss: `${BASE}/${name}`, sub: 'rp-user', aud: 'account', exp: t + 2, iat: t }, KEY1);
  }
  send(res, 200, answer);
  return true;
}
// --------------------------- end of session cases ---------------------

const server = http.createServer((req, res) => {
  const url = new URL(req.url, BASE);
  const [, name, ...rest] = url.pathname.split('/');
  const what = rest.join('/');
  let body = '';
  req.on('data', (d) => { body += d; });
  req.on('end', () => {
    if (!name) return send(res, 404, { error: 'no case' });
    const r = realm(name);
    if (sessionCase(name, what, body, res)) return;
    switch (what) {
      case '.well-known/openid-configuration':
        return send(res, 200, documentText(name, discovery(name), 'disc'));
      case 'jwks':
        // `rotation-down`: the keys rotate and the JWKS endpoint fails
        // from its second request on.
        if (caseOf(name) === 'rotation-down') {
          r.jwksServed = (r.jwksServed ?? 0) + 1;
          if (r.jwksServed > 1) return send(res, 500, { error: 'down' });
        }
        if (caseOf(name) === 'slow') {
          return setTimeout(() => send(res, 200, jwks(name)), SLOW_MS);
        }
        return send(res, 200, documentText(name, jwks(name), 'jwks'));
      case 'auth': {
        const code = crypto.randomBytes(12).toString('base64url');
        r.nonces.set(code, url.searchParams.get('nonce'));
        const back = new URL(url.searchParams.get('redirect_uri'));
        back.searchParams.set('code', code);
        back.searchParams.set('state', url.searchParams.get('state') ?? '');
        res.writeHead(302, { location: back.toString() });
        return res.end();
      }
      case 'token': {
        const form = new URLSearchParams(body);
        const nonce = r.nonces.get(form.get('code') ?? '');
        if (nonce === undefined) return send(res, 400, { error: 'invalid_grant' });
        r.nonces.delete(form.get('code'));
        return send(res, 200, {
          access_token: crypto.randomBytes(24).toString('base64url'),
          id_token: craft(name, 'id', nonce),
          token_type: 'Bearer',
          expires_in: 300,
        });
      }
      case 'userinfo':
        return send(res, 200, {
          sub: caseOf(name) === 'userinfo-bad-sub' ? 'someone-else' : 'rp-user',
          preferred_username: 'rp-user',
        });
      case 'bearer':
        return send(res, 200, { access_token: craft(name, 'access') });
      default:
        return send(res, 404, { error: 'not found' });
    }
  });
});

server.listen(PORT, '127.0.0.1', () => process.stdout.write('ready\n'));
process.on('SIGTERM', () => server.close(() => process.exit(0)));
