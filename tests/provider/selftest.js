// Self-test for the test OpenID provider: starts `node server.js` on a free
// port and checks the Keycloak-like behaviour the integration tests rely on.
// Run: node tests/provider/selftest.js   (exit status 0 = all passed)

import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const CLIENT_ID = 'apisix-quickstart-client';
const CLIENT_SECRET = 'selftest-secret-0123456789';
const BASIC = `Basic ${Buffer.from(`${CLIENT_ID}:${CLIENT_SECRET}`).toString('base64')}`;

let failures = 0;
let checks = 0;
function check(cond, what, detail) {
  checks += 1;
  if (cond) {
    console.log(`ok   ${what}`);
  } else {
    failures += 1;
    console.log(`FAIL ${what}${detail !== undefined ? ` -- ${typeof detail === 'string' ? detail : JSON.stringify(detail)}` : ''}`);
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function startProvider(port, extraEnv = {}) {
  const started = Date.now();
  const child = spawn(process.execPath, [path.join(here, 'server.js')], {
    env: { ...process.env, PORT: String(port), CLIENT_SECRET, ...extraEnv },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { err += d; });
  const issuer = extraEnv.ISSUER || `http://127.0.0.1:${port}/realms/quickstart-realm`;
  const discoveryUrl = `${issuer}/.well-known/openid-configuration`;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`provider exited: ${err}`);
    try {
      const res = await fetch(discoveryUrl);
      if (res.status === 200) break;
    } catch {}
    if (Date.now() - started > 10_000) throw new Error('provider did not start in 10 s');
    await new Promise((r) => setTimeout(r, 25));
  }
  const ms = Date.now() - started;
  return {
    child, issuer, ms, output: () => out + err,
  };
}

async function stopProvider(p) {
  if (p.child.exitCode !== null) return p.child.exitCode;
  const exited = new Promise((r) => p.child.once('exit', (code, signal) => r(code ?? signal)));
  p.child.kill('SIGTERM');
  return exited;
}

function decodeJwt(jwt) {
  const [h, p] = jwt.split('.');
  return {
    header: JSON.parse(Buffer.from(h, 'base64url')),
    payload: JSON.parse(Buffer.from(p, 'base64url')),
  };
}

function verifyJwt(jwt, jwks) {
  const [h, p, s] = jwt.split('.');
  const { kid } = JSON.parse(Buffer.from(h, 'base64url'));
  const jwk = jwks.keys.find((k) => k.kid === kid);
  if (!jwk) return false;
  const key = crypto.createPublicKey({ key: jwk, format: 'jwk' });
  return crypto.verify('sha256', Buffer.from(`${h}.${p}`), key, Buffer.from(s, 'base64url'));
}

const form = (obj) => new URLSearchParams(obj).toString();
const FORM = { 'Content-Type': 'application/x-www-form-urlencoded' };

async function post(url, body, headers = {}) {
  const res = await fetch(url, { method: 'POST', headers: { ...FORM, ...headers }, body: form(body) });
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch {}
  return { status: res.status, json, text, headers: res.headers };
}

// A tiny cookie jar for the browser-less code flow.
class Jar {
  cookies = new Map();

  store(res) {
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(';');
      const i = pair.indexOf('=');
      const name = pair.slice(0, i);
      const value = pair.slice(i + 1);
      if (value === '' || /expires=Thu, 01 Jan 1970/i.test(c)) this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
  }

  header() {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  async fetch(url, init = {}) {
    const res = await fetch(url, {
      redirect: 'manual',
      ...init,
      headers: { ...(init.headers || {}), Cookie: this.header() },
    });
    this.store(res);
    return res;
  }
}

async function main() {
  const port = await freePort();
  const p1 = await startProvider(port, { ACCESS_TOKEN_TTL: '120' });
  console.log(`# provider up in ${p1.ms} ms on port ${port}`);
  const { issuer } = p1;

  // Discovery.
  const disco = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
  check(disco.issuer === issuer, 'discovery issuer equals ISSUER', disco.issuer);
  const kc = `${issuer}/protocol/openid-connect`;
  check(disco.authorization_endpoint === `${kc}/auth`, 'authorization_endpoint is Keycloak-shaped');
  check(disco.token_endpoint === `${kc}/token`, 'token_endpoint is Keycloak-shaped');
  check(disco.userinfo_endpoint === `${kc}/userinfo`, 'userinfo_endpoint is Keycloak-shaped');
  check(disco.jwks_uri === `${kc}/certs`, 'jwks_uri is Keycloak-shaped');
  check(disco.introspection_endpoint === `${kc}/token/introspect`, 'introspection_endpoint is Keycloak-shaped');
  check(disco.revocation_endpoint === `${kc}/revoke`, 'revocation_endpoint is Keycloak-shaped');
  check(disco.end_session_endpoint === `${kc}/logout`, 'end_session_endpoint is Keycloak-shaped');
  check(disco.code_challenge_methods_supported?.includes('S256'), 'S256 PKCE advertised');
  const certs = await (await fetch(disco.jwks_uri)).json();
  check(certs.keys?.length === 1 && certs.keys[0].kty === 'RSA' && certs.keys[0].kid && !certs.keys[0].d,
    'certs: one public RSA key with a kid', certs);
  const kid1 = certs.keys[0].kid;

  // Client credentials, basic and post.
  const ccBasic = await post(disco.token_endpoint, { grant_type: 'client_credentials', scope: 'profile' }, { Authorization: BASIC });
  check(ccBasic.status === 200 && ccBasic.json?.access_token, 'client_credentials with client_secret_basic', ccBasic.text);
  const ccPost = await post(disco.token_endpoint, {
    grant_type: 'client_credentials', client_id: CLIENT_ID, client_secret: CLIENT_SECRET,
  });
  check(ccPost.status === 200 && ccPost.json?.access_token, 'client_credentials with client_secret_post', ccPost.text);
  check(ccPost.json && decodeJwt(ccPost.json.access_token).payload.scope === undefined,
    'client_credentials without scope -> no scope claim', ccPost.json && decodeJwt(ccPost.json.access_token).payload);
  const pwEmail = await post(disco.token_endpoint, {
    grant_type: 'password', username: 'quickstart-user@example.com', password: 'quickstart-user-pass',
  }, { Authorization: BASIC });
  check(pwEmail.status === 200, 'password grant with the email as username', pwEmail.text);
  const ccBad = await post(disco.token_endpoint, {
    grant_type: 'client_credentials', client_id: CLIENT_ID, client_secret: 'wrong',
  });
  check(ccBad.status === 401 && ccBad.json?.error === 'invalid_client', 'wrong client secret -> 401 invalid_client', ccBad.text);
  {
    const at = ccBasic.json.access_token;
    const { header, payload } = decodeJwt(at);
    check(at.split('.').length === 3 && header.alg === 'RS256' && header.kid === kid1,
      'client_credentials token is an RS256 JWT whose kid is in certs', header);
    check(verifyJwt(at, certs), 'client_credentials token signature verifies against certs');
    check(payload.iss === issuer && payload.aud === 'account' && payload.scope === 'profile'
      && payload.azp === CLIENT_ID && payload.client_id === CLIENT_ID && payload.jti && payload.exp > payload.iat,
    'client_credentials token claims (iss, aud, scope, azp, client_id, jti, exp)', payload);
    check(payload.exp - payload.iat === 120, 'ACCESS_TOKEN_TTL applies', payload.exp - payload.iat);
    const intro = await post(disco.introspection_endpoint, { token: at }, { Authorization: BASIC });
    check(intro.json?.active === true && intro.json.client_id === CLIENT_ID && intro.json.scope === 'profile',
      'introspection of a client_credentials JWT -> active', intro.json);
  }

  // Password grant.
  const pw = await post(disco.token_endpoint, {
    grant_type: 'password', username: 'quickstart-user', password: 'quickstart-user-pass', scope: 'openid profile email',
  }, { Authorization: BASIC });
  check(pw.status === 200 && pw.json?.access_token && pw.json.refresh_token && pw.json.id_token,
    'password grant -> access, refresh and ID token', pw.text);
  const at = pw.json.access_token;
  const atClaims = decodeJwt(at).payload;
  check(verifyJwt(at, certs) && atClaims.sub && atClaims.preferred_username === 'quickstart-user'
    && atClaims.scope === 'openid profile email' && atClaims.typ === 'Bearer' && atClaims.azp === CLIENT_ID,
  'password access token: sub, preferred_username, scope, typ, azp', atClaims);
  const idClaims = decodeJwt(pw.json.id_token).payload;
  check(verifyJwt(pw.json.id_token, certs) && idClaims.aud === CLIENT_ID && idClaims.sub === atClaims.sub
    && idClaims.email === 'quickstart-user@example.com', 'password ID token: aud=client, sub, email', idClaims);
  const pwPost = await post(disco.token_endpoint, {
    grant_type: 'password', username: 'quickstart-user', password: 'quickstart-user-pass', client_id: CLIENT_ID, client_secret: CLIENT_SECRET,
  });
  check(pwPost.status === 200 && decodeJwt(pwPost.json.access_token).payload.scope === 'profile email' && !pwPost.json.id_token,
    'password grant (client_secret_post, no scope) -> Keycloak default scopes "profile email"', pwPost.text);

  const wrong = await post(disco.token_endpoint, {
    grant_type: 'password', username: 'quickstart-user', password: 'nope', scope: 'openid',
  }, { Authorization: BASIC });
  check(wrong.status === 401 && wrong.json?.error === 'invalid_grant', 'wrong password -> 401 invalid_grant', `${wrong.status} ${wrong.text}`);

  // Refresh.
  const refreshed = await post(disco.token_endpoint, { grant_type: 'refresh_token', refresh_token: pw.json.refresh_token }, { Authorization: BASIC });
  check(refreshed.status === 200 && refreshed.json?.access_token && refreshed.json.access_token !== at
    && decodeJwt(refreshed.json.access_token).payload.sub === atClaims.sub && refreshed.json.refresh_token,
  'refresh grant -> new JWT access token', refreshed.text);
  const refreshedAgain = await post(disco.token_endpoint, { grant_type: 'refresh_token', refresh_token: pw.json.refresh_token }, { Authorization: BASIC });
  check(refreshedAgain.status === 200, 'refresh token is reusable (no rotation)', refreshedAgain.text);

  // Introspection of the JWT (basic and post).
  const intro = await post(disco.introspection_endpoint, { token: at, token_type_hint: 'access_token' }, { Authorization: BASIC });
  check(intro.status === 200 && intro.json?.active === true && intro.json.sub === atClaims.sub
    && intro.json.exp === atClaims.exp && intro.json.scope === 'openid profile email' && intro.json.jti === atClaims.jti
    && intro.json.username === 'quickstart-user' && intro.json.token_type === 'Bearer',
  'introspection of the JWT -> active with sub, exp, scope, jti, username', intro.json);
  const introPost = await post(disco.introspection_endpoint, { token: at, client_id: CLIENT_ID, client_secret: CLIENT_SECRET });
  check(introPost.json?.active === true, 'introspection with client_secret_post', introPost.json);
  const introRt = await post(disco.introspection_endpoint, { token: pw.json.refresh_token }, { Authorization: BASIC });
  check(introRt.json?.active === true && introRt.json.sub === atClaims.sub, 'introspection of the refresh token -> active', introRt.json);
  const forged = `${at.split('.').slice(0, 2).join('.')}.${Buffer.from('x'.repeat(256)).toString('base64url')}`;
  const introForged = await post(disco.introspection_endpoint, { token: forged }, { Authorization: BASIC });
  check(introForged.status === 200 && introForged.json?.active === false, 'introspection of a JWT with a bad signature -> active false', introForged.json);
  const introNoAuth = await post(disco.introspection_endpoint, { token: at });
  check(introNoAuth.status === 400 || introNoAuth.status === 401, 'introspection without client auth is refused', introNoAuth.status);

  // Userinfo with the JWT.
  const ui = await fetch(disco.userinfo_endpoint, { headers: { Authorization: `Bearer ${at}` } });
  const uiJson = await ui.json();
  check(ui.status === 200 && uiJson.sub === atClaims.sub && uiJson.preferred_username === 'quickstart-user',
    'userinfo with the JWT access token -> 200 with sub', uiJson);
  const uiBad = await fetch(disco.userinfo_endpoint, { headers: { Authorization: `Bearer ${forged}` } });
  check(uiBad.status === 401, 'userinfo with a forged JWT -> 401', uiBad.status);

  // Revocation, then introspection says inactive.
  const rev = await post(disco.revocation_endpoint, { token: at, token_type_hint: 'access_token' }, { Authorization: BASIC });
  check(rev.status === 200, 'revocation of the JWT access token -> 200', `${rev.status} ${rev.text}`);
  const introAfter = await post(disco.introspection_endpoint, { token: at }, { Authorization: BASIC });
  check(introAfter.json?.active === false, 'introspection after revocation -> active false', introAfter.json);
  const uiAfter = await fetch(disco.userinfo_endpoint, { headers: { Authorization: `Bearer ${at}` } });
  check(uiAfter.status === 401, 'userinfo after revocation -> 401', uiAfter.status);
  const introOther = await post(disco.introspection_endpoint, { token: refreshed.json.access_token }, { Authorization: BASIC });
  check(introOther.json?.active === true, 'revoking one access token leaves the others active', introOther.json);
  const revRt = await post(disco.revocation_endpoint, { token: pw.json.refresh_token, client_id: CLIENT_ID, client_secret: CLIENT_SECRET });
  const introOtherAfter = await post(disco.introspection_endpoint, { token: refreshed.json.access_token }, { Authorization: BASIC });
  check(revRt.status === 200 && introOtherAfter.json?.active === false,
    'revoking the refresh token (post auth) ends its whole grant', introOtherAfter.json);

  // Authorization code flow without a browser: login page, wrong password,
  // right password, code, PKCE, logout.
  {
    const jar = new Jar();
    const redirectUri = 'http://localhost:9/anything/callback'; // registered (any loopback port)
    const verifier = crypto.randomBytes(32).toString('base64url');
    const challenge = crypto.createHash('sha256').update(verifier).digest('base64url');
    const authUrl = `${disco.authorization_endpoint}?${form({
      client_id: CLIENT_ID, response_type: 'code', scope: 'openid profile email', redirect_uri: redirectUri,
      state: 'st4te', nonce: 'n0nce', code_challenge: challenge, code_challenge_method: 'S256',
    })}`;
    const evil = await jar.fetch(authUrl.replace(encodeURIComponent(redirectUri), encodeURIComponent('http://evil.example/anything/callback')));
    check(evil.status === 400 && !evil.headers.get('location'),
      'an unregistered redirect_uri -> 400, no redirect', evil.status);
    const r1 = await jar.fetch(authUrl);
    const loginUrl = new URL(r1.headers.get('location') ?? '', issuer).href;
    check((r1.status === 303 || r1.status === 302) && loginUrl.startsWith(`${issuer}/login-actions/authenticate/`),
      'authorization request -> redirect to the login page under the issuer', `${r1.status} ${loginUrl}`);
    const r2 = await jar.fetch(loginUrl);
    const html = await r2.text();
    check(r2.status === 200 && html.includes('id="kc-form-login"') && html.includes('id="username"')
      && html.includes('id="password"') && html.includes('id="kc-login"') && !html.includes('id="input-error"'),
    'login page has Keycloak element ids', html.slice(0, 200));
    const action = new URL(html.match(/action="([^"]+)"/)[1].replace(/&amp;/g, '&'), issuer).href;
    const r3 = await jar.fetch(action, { method: 'POST', headers: FORM, body: form({ username: 'quickstart-user', password: 'wrong' }) });
    const html3 = await r3.text();
    check(r3.status === 200 && html3.includes('<span id="input-error" aria-live="polite">Invalid username or password.</span>'),
      'wrong password -> 200 with #input-error', html3.slice(0, 200));
    const r4 = await jar.fetch(action, { method: 'POST', headers: FORM, body: form({ username: 'quickstart-user', password: 'quickstart-user-pass' }) });
    check(r4.status === 303, 'right password -> redirect back to the authorization endpoint', r4.status);
    const r5 = await jar.fetch(new URL(r4.headers.get('location'), issuer).href);
    const cb = new URL(r5.headers.get('location') ?? 'http://invalid/');
    check((r5.status === 303 || r5.status === 302) && `${cb.origin}${cb.pathname}` === redirectUri
      && cb.searchParams.get('code') && cb.searchParams.get('state') === 'st4te' && cb.searchParams.get('iss') === issuer,
    'consent is implied: redirect to the registered redirect_uri with code, state, iss', `${r5.status} ${cb.href.replace(/code=[^&]+/, 'code=...')}`);
    const tok = await post(disco.token_endpoint, {
      grant_type: 'authorization_code', code: cb.searchParams.get('code'), redirect_uri: redirectUri, code_verifier: verifier,
    }, { Authorization: BASIC });
    check(tok.status === 200 && tok.json.access_token && tok.json.refresh_token && tok.json.id_token,
      'code exchange with PKCE -> access, refresh and ID token', tok.text);
    const codeAt = decodeJwt(tok.json.access_token);
    check(codeAt.header.alg === 'RS256' && codeAt.payload.aud === 'account' && codeAt.payload.scope === 'openid profile email'
      && codeAt.payload.preferred_username === 'quickstart-user', 'code-flow access token is the RS256 JWT', codeAt.payload);
    const idt = decodeJwt(tok.json.id_token).payload;
    check(idt.nonce === 'n0nce' && idt.sid && idt.aud === CLIENT_ID, 'code-flow ID token has nonce and sid', idt);
    const codeRefresh = await post(disco.token_endpoint, { grant_type: 'refresh_token', refresh_token: tok.json.refresh_token }, { Authorization: BASIC });
    check(codeRefresh.status === 200 && decodeJwt(codeRefresh.json.access_token).header.alg === 'RS256',
      'code-flow refresh -> JWT access token', codeRefresh.text);
    const ui2 = await fetch(disco.userinfo_endpoint, { headers: { Authorization: `Bearer ${tok.json.access_token}` } });
    check(ui2.status === 200, 'userinfo with the code-flow access token', ui2.status);

    // SSO: a second authorization request goes straight back with a code.
    const r6 = await jar.fetch(authUrl.replace('st4te', 'again'));
    const cb2 = new URL(r6.headers.get('location') ?? 'http://invalid/');
    check(cb2.searchParams.get('code') && cb2.searchParams.get('state') === 'again', 'SSO session: second login needs no form');

    // Logout with id_token_hint: straight to post_logout_redirect_uri.
    const after = 'http://127.0.0.1:9/after/logout';
    const lo = await jar.fetch(`${disco.end_session_endpoint}?${form({
      id_token_hint: tok.json.id_token, post_logout_redirect_uri: after, state: 'bye',
    })}`);
    check((lo.status === 302 || lo.status === 303) && lo.headers.get('location') === `${after}?state=bye`,
      'logout with id_token_hint -> redirect straight to post_logout_redirect_uri', `${lo.status} ${lo.headers.get('location')}`);
    const introLo = await post(disco.introspection_endpoint, { token: tok.json.access_token }, { Authorization: BASIC });
    check(introLo.json?.active === false, 'access token of the ended session is inactive', introLo.json);
    const r7 = await jar.fetch(authUrl);
    check((r7.headers.get('location') ?? '').includes('/login-actions/authenticate/'), 'after logout the login page is shown again');

    // Logout with client_id instead of id_token_hint (no session now).
    const lo2 = await jar.fetch(`${disco.end_session_endpoint}?${form({ client_id: CLIENT_ID, post_logout_redirect_uri: after })}`);
    check((lo2.status === 302 || lo2.status === 303) && lo2.headers.get('location') === after,
      'logout with client_id -> redirect straight to post_logout_redirect_uri', `${lo2.status} ${lo2.headers.get('location')}`);
    const lo4 = await jar.fetch(disco.end_session_endpoint, {
      method: 'POST', headers: FORM, body: form({ client_id: CLIENT_ID, post_logout_redirect_uri: after, state: 'p' }),
    });
    check((lo4.status === 302 || lo4.status === 303) && lo4.headers.get('location') === `${after}?state=p`,
      'logout by POST -> redirect straight to post_logout_redirect_uri', `${lo4.status} ${lo4.headers.get('location')}`);
    const lo3 = await jar.fetch(disco.end_session_endpoint);
    const lo3Target = lo3.headers.get('location') ?? '';
    const lo3Page = await fetch(lo3Target);
    check((lo3.status === 302 || lo3.status === 303) && lo3Target.startsWith(issuer) && lo3Page.status === 200
      && !(await lo3Page.text()).includes('fonts.googleapis'), 'plain logout -> local success page without web fonts', lo3Target);
  }

  // Nothing secret in the provider's output.
  const out1 = p1.output();
  check(!out1.includes(CLIENT_SECRET) && !out1.includes('quickstart-user-pass') && !out1.includes(at.slice(0, 40)),
    'provider output holds no secrets or tokens');
  check(/^ready http:\/\/127\.0\.0\.1:\d+\/realms\/quickstart-realm$/m.test(out1), 'provider printed "ready <issuer>"');

  const noise = out1.split('\n').filter((l) => l && !l.startsWith('ready '));
  for (const line of noise) console.log(`# provider said: ${line}`);
  const code = await stopProvider(p1);
  check(code === 0, 'SIGTERM -> clean exit 0', code);

  // Restart: a new signing key, the old tokens are gone.
  const p2 = await startProvider(port);
  console.log(`# provider restarted in ${p2.ms} ms`);
  const certs2 = await (await fetch(`${issuer}/protocol/openid-connect/certs`)).json();
  check(certs2.keys?.[0]?.kid && certs2.keys[0].kid !== kid1, 'restart -> different kid', [kid1, certs2.keys?.[0]?.kid]);
  const introOld = await post(`${issuer}/protocol/openid-connect/token/introspect`, { token: ccBasic.json.access_token }, { Authorization: BASIC });
  check(introOld.json?.active === false, 'token from before the restart is inactive', introOld.json);
  await stopProvider(p2);

  // EXTRA_ROLES: Keycloak's realm_access.roles in the ID token, the access
  // tokens and userinfo (large tokens); none without it.
  check(atClaims.realm_access === undefined && idClaims.realm_access === undefined,
    'without EXTRA_ROLES tokens carry no realm_access', [atClaims.realm_access, idClaims.realm_access]);
  {
    const portR = await freePort();
    const pr = await startProvider(portR, { EXTRA_ROLES: '60' });
    const discoR = await (await fetch(`${pr.issuer}/.well-known/openid-configuration`)).json();
    const pwR = await post(discoR.token_endpoint, {
      grant_type: 'password', username: 'quickstart-user', password: 'quickstart-user-pass', scope: 'openid profile',
    }, { Authorization: BASIC });
    const rolesOk = (claims) => {
      const roles = claims?.realm_access?.roles;
      return Array.isArray(roles) && roles.length === 60 && roles.every((r) => r.length === 40)
        && roles[0] === 'role-0001-abcdefghijklmnopqrstuvwxyz0123' && roles[59].startsWith('role-0060-')
        && new Set(roles).size === 60;
    };
    const atR = pwR.json && decodeJwt(pwR.json.access_token).payload;
    const idR = pwR.json && decodeJwt(pwR.json.id_token).payload;
    check(pwR.status === 200 && rolesOk(atR) && rolesOk(idR) && atR.sub === idR.sub,
      'EXTRA_ROLES=60: access and ID token carry 60 realm_access roles of 40 characters', pwR.text.slice(0, 200));
    check(pwR.json?.id_token.length > 4000 && pwR.json?.access_token.length > 4000,
      'EXTRA_ROLES=60: ID and access token are over 4000 characters each',
      [pwR.json?.id_token.length, pwR.json?.access_token.length]);
    const uiR = await fetch(discoR.userinfo_endpoint, { headers: { Authorization: `Bearer ${pwR.json?.access_token}` } });
    const uiRJson = await uiR.json();
    check(uiR.status === 200 && rolesOk(uiRJson), 'EXTRA_ROLES=60: userinfo carries the roles', uiRJson);
    const refR = await post(discoR.token_endpoint, { grant_type: 'refresh_token', refresh_token: pwR.json?.refresh_token }, { Authorization: BASIC });
    check(refR.status === 200 && rolesOk(decodeJwt(refR.json.access_token).payload) && rolesOk(decodeJwt(refR.json.id_token).payload),
      'EXTRA_ROLES=60: refreshed access and ID token carry the roles', refR.text.slice(0, 200));
    const ccR = await post(discoR.token_endpoint, { grant_type: 'client_credentials' }, { Authorization: BASIC });
    check(ccR.status === 200 && rolesOk(decodeJwt(ccR.json.access_token).payload),
      'EXTRA_ROLES=60: client_credentials access token carries the roles', ccR.text.slice(0, 200));
    await stopProvider(pr);
  }
  for (const bad of ['abc', '-1', '1.5', '10001']) {
    const portB = await freePort();
    const child = spawn(process.execPath, [path.join(here, 'server.js')], {
      env: { ...process.env, PORT: String(portB), EXTRA_ROLES: bad }, stdio: ['ignore', 'ignore', 'pipe'],
    });
    let errB = '';
    child.stderr.on('data', (d) => { errB += d; });
    const codeB = await new Promise((r) => child.once('exit', (code) => r(code)));
    check(codeB === 2 && errB.includes('EXTRA_ROLES'), `EXTRA_ROLES=${bad} is refused at start`, `${codeB} ${errB}`);
  }

  // KEY_FILE and a custom ISSUER path.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'provider-selftest-'));
  const keyFile = path.join(dir, 'key.json');
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  fs.writeFileSync(keyFile, JSON.stringify({ ...privateKey.export({ format: 'jwk' }), kid: 'fixed-kid' }));
  const port3 = await freePort();
  const issuer3 = `http://127.0.0.1:${port3}/realms/other-realm`;
  const p3 = await startProvider(port3, { KEY_FILE: keyFile, ISSUER: issuer3 });
  const disco3 = await (await fetch(`${issuer3}/.well-known/openid-configuration`)).json();
  const certs3 = await (await fetch(disco3.jwks_uri)).json();
  check(disco3.issuer === issuer3 && disco3.token_endpoint === `${issuer3}/protocol/openid-connect/token`,
    'custom ISSUER path is the mount point', disco3);
  check(certs3.keys.length === 1 && certs3.keys[0].kid === 'fixed-kid', 'KEY_FILE key is used', certs3.keys.map((k) => k.kid));
  const cc3 = await post(disco3.token_endpoint, { grant_type: 'client_credentials' }, { Authorization: BASIC });
  check(cc3.status === 200 && decodeJwt(cc3.json.access_token).header.kid === 'fixed-kid' && verifyJwt(cc3.json.access_token, certs3),
    'tokens are signed with the KEY_FILE key');
  await stopProvider(p3);
  fs.rmSync(dir, { recursive: true, force: true });

  console.log(`# ${checks - failures}/${checks} checks passed`);
  process.exitCode = failures ? 1 : 0;
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
