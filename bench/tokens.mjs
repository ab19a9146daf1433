// Keys and signed tokens for `make bench` (Node's own crypto, no packages).
//
//   node bench/tokens.mjs <out dir> <issuer>
//
// Writes into <out dir>:
//   provider-keys.json  the RSA private JWK for the test provider (KEY_FILE),
//                       so tokens signed here verify against its JWKS
//   rsa.pem, ec.pem     public keys for `public_key` routes
//   rs256.txt           1,000 RS256 tokens (kid of provider-keys.json)
//   ps256.txt           1,000 PS256 tokens (same RSA key)
//   es256.txt           1,000 ES256 tokens (P-256)
//   es256-100k.txt      100,000 distinct ES256 tokens (the memory scenario)
//   rs256-cold.txt      20,000 more RS256 tokens, none in rs256.txt (the
//                       cold-token scenario: tokens the gateway never saw)
// One token per line; every token valid for a day.

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

const [outDir, issuer] = process.argv.slice(2);
if (!outDir || !issuer) {
  process.stderr.write('usage: node bench/tokens.mjs <out dir> <issuer>\n');
  process.exit(2);
}
fs.mkdirSync(outDir, { recursive: true });

const b64 = (x) => Buffer.from(x).toString('base64url');
const now = Math.floor(Date.now() / 1000);

const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const rsaJwk = { ...rsa.privateKey.export({ format: 'jwk' }), kid: 'bench-rsa', alg: 'RS256', use: 'sig' };
fs.writeFileSync(path.join(outDir, 'provider-keys.json'), JSON.stringify({ keys: [rsaJwk] }));
fs.writeFileSync(path.join(outDir, 'rsa.pem'), rsa.publicKey.export({ type: 'spki', format: 'pem' }));
fs.writeFileSync(path.join(outDir, 'ec.pem'), ec.publicKey.export({ type: 'spki', format: 'pem' }));

function sign(alg, n) {
  const header = b64(JSON.stringify({ alg, typ: 'JWT', kid: alg === 'ES256' ? 'bench-ec' : 'bench-rsa' }));
  const payload = b64(JSON.stringify({
    iss: issuer,
    sub: `bench-user-${n}`,
    aud: 'account',
    azp: 'apisix-quickstart-client',
    iat: now - 10,
    exp: now + 86400,
    jti: `bench-${alg}-${n}`,
    scope: 'openid profile',
  }));
  const input = `${header}.${payload}`;
  let sig;
  if (alg === 'RS256') {
    sig = crypto.sign('sha256', Buffer.from(input), rsa.privateKey);
  } else if (alg === 'PS256') {
    sig = crypto.sign('sha256', Buffer.from(input), {
      key: rsa.privateKey,
      padding: crypto.constants.RSA_PKCS1_PSS_PADDING,
      saltLength: 32,
    });
  } else {
    sig = crypto.sign('sha256', Buffer.from(input), { key: ec.privateKey, dsaEncoding: 'ieee-p1363' });
  }
  return `${input}.${b64(sig)}`;
}

function write(file, alg, count, offset = 0) {
  const lines = [];
  for (let i = 0; i < count; i += 1) lines.push(sign(alg, offset + i));
  fs.writeFileSync(path.join(outDir, file), `${lines.join('\n')}\n`);
}

write('rs256.txt', 'RS256', 1000);
write('ps256.txt', 'PS256', 1000);
write('es256.txt', 'ES256', 1000);
write('es256-100k.txt', 'ES256', 100000, 1000);
write('rs256-cold.txt', 'RS256', 20000, 200000);
process.stdout.write(`tokens written to ${outDir}\n`);
