// A test tool, not part of the provider: RSA keys and RS256 JWTs, so that
// a test can give the provider a signing key (KEY_FILE) and then sign
// tokens as that provider would (or with another key), e.g. back-channel
// logout tokens with one claim wrong.
//
//   node sign.js key <kid>          prints a private RSA-2048 JWK
//   node sign.js sign <jwk file>    reads {"header":{...},"payload":{...}}
//                                   on stdin, prints the compact JWS
//                                   (RS256; the header's `kid` as given)

import * as crypto from 'node:crypto';
import * as fs from 'node:fs';

const b64 = (v) => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');
const [cmd, arg] = process.argv.slice(2);
if (cmd === 'key') {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  process.stdout.write(JSON.stringify({ ...privateKey.export({ format: 'jwk' }), kid: arg }));
} else if (cmd === 'sign') {
  const jwk = JSON.parse(fs.readFileSync(arg, 'utf8'));
  const { header, payload } = JSON.parse(fs.readFileSync(0, 'utf8'));
  const input = `${b64(header)}.${b64(payload)}`;
  const key = crypto.createPrivateKey({ key: jwk, format: 'jwk' });
  const sig = crypto.sign('sha256', Buffer.from(input), key).toString('base64url');
  process.stdout.write(`${input}.${sig}`);
} else {
  process.stderr.write('usage: node sign.js key <kid> | sign <jwk file>\n');
  process.exit(2);
}
