// The `keys` interface: RSA key pairs held by the host, stored sealed (AES-256-GCM under a master
// key kept outside the data directory), so private keys never enter guest memory nor lie on
// disk in the clear. Node's crypto does RSA; node-forge builds the self-signed certificate,
// which Node 20's crypto cannot create.
import { createCipheriv, createDecipheriv, createPrivateKey, createPublicKey, generateKeyPairSync,
  constants, privateDecrypt, randomBytes, sign, verify } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';

// node-forge is only needed for certificates: loaded on first use, which keeps start-up short.
let forgeModule;
const forge = () => (forgeModule ??= createRequire(import.meta.url)('node-forge'));

const ok = (val) => ({ tag: 'ok', val });
const err = (tag, val) => ({ tag: 'err', val: val === undefined ? { tag } : { tag, val } });
const bytes = (buf) => new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);

/** The host's master key: 32 bytes, base64, from NODEHOST_MASTER_KEY or a file created once. */
export function loadMasterKey(file) {
  const text = process.env.NODEHOST_MASTER_KEY;
  if (text) return Buffer.from(text, 'base64');
  if (!existsSync(file)) {
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, randomBytes(32).toString('base64'), { mode: 0o600 });
  }
  return Buffer.from(readFileSync(file, 'utf8').trim(), 'base64');
}

export function seal(master, plaintext) {
  const nonce = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', master, nonce);
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([nonce, body, cipher.getAuthTag()]);
}

export function unseal(master, sealed) {
  const data = Buffer.from(sealed);
  if (data.length < 28) throw new Error('sealed data too short');
  const decipher = createDecipheriv('aes-256-gcm', master, data.subarray(0, 12));
  decipher.setAuthTag(data.subarray(data.length - 16));
  return Buffer.concat([decipher.update(data.subarray(12, data.length - 16)), decipher.final()]);
}

/** The `keys` import of one instance; key files live in `dir`, one sealed PKCS#8 per name. */
export function keysImport(dir, master) {
  const cache = new Map(); // name -> KeyObject, parsed once
  const file = (name) => join(dir, `${Buffer.from(name).toString('hex')}.key`);
  const load = (name) => {
    if (cache.has(name)) return cache.get(name);
    if (!existsSync(file(name))) return undefined;
    const der = unseal(master, readFileSync(file(name)));
    const key = createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
    cache.set(name, key);
    return key;
  };
  const withKey = (name, f) => {
    let key;
    try {
      key = load(name);
    } catch (e) {
      return err('failed', `cannot read key ${name}: ${e.message}`);
    }
    if (!key) return err('not-found');
    try {
      return f(key);
    } catch (e) {
      return err('invalid', e.message);
    }
  };

  return {
    generateRsa(name, bits) {
      if (bits < 2048 || bits > 4096) return err('invalid', `bits must be 2048..4096, not ${bits}`);
      const { privateKey } = generateKeyPairSync('rsa', { modulusLength: bits });
      mkdirSync(dir, { recursive: true });
      const der = privateKey.export({ type: 'pkcs8', format: 'der' });
      writeFileSync(`${file(name)}.tmp`, seal(master, der));
      renameSync(`${file(name)}.tmp`, file(name));
      cache.set(name, privateKey);
      return ok(undefined);
    },
    exists: (name) => load(name) !== undefined,
    delete(name) {
      cache.delete(name);
      rmSync(file(name), { force: true });
    },
    publicKeyDer: (name) => withKey(name, (key) =>
      ok(bytes(createPublicKey(key).export({ type: 'spki', format: 'der' })))),
    selfSignedCertificate: (name, commonName, days) => withKey(name, (key) => {
      const { asn1, md, pki } = forge();
      const pem = key.export({ type: 'pkcs8', format: 'pem' });
      const cert = pki.createCertificate();
      cert.publicKey = pki.publicKeyFromPem(createPublicKey(key).export({ type: 'spki', format: 'pem' }));
      cert.serialNumber = '01' + randomBytes(15).toString('hex'); // positive, 16 bytes
      cert.validity.notBefore = new Date();
      cert.validity.notAfter = new Date(Date.now() + days * 86_400_000);
      const subject = [{ name: 'commonName', value: commonName }];
      cert.setSubject(subject);
      cert.setIssuer(subject);
      cert.sign(pki.privateKeyFromPem(pem), md.sha256.create());
      const der = asn1.toDer(pki.certificateToAsn1(cert)).getBytes();
      return ok(bytes(Buffer.from(der, 'binary')));
    }),
    rsaOaepDecrypt: (name, hash, ciphertexts) => withKey(name, (key) => ok(ciphertexts.map((ct) => {
      try {
        const plain = privateDecrypt({ key, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: hash }, ct);
        return ok(bytes(plain));
      } catch (e) {
        return { tag: 'err', val: { tag: 'invalid', val: e.message } };
      }
    }))),
    signRs256: (name, data) => withKey(name, (key) => ok(bytes(sign('sha256', data, key)))),
    verifyRs256(publicKey, data, signature) {
      try {
        const key = publicKey.tag === 'rsa'
          ? createPublicKey({ key: { kty: 'RSA', n: b64url(publicKey.val[0]), e: b64url(publicKey.val[1]) }, format: 'jwk' })
          : createPublicKey({ key: Buffer.from(publicKey.val), format: 'der', type: 'spki' });
        return verify('sha256', data, key, signature);
      } catch {
        return false;
      }
    },
    seal: (plaintext) => bytes(seal(master, plaintext)),
    unseal(sealed) {
      try {
        return ok(bytes(unseal(master, sealed)));
      } catch (e) {
        return err('invalid', `cannot unseal: ${e.message}`);
      }
    },
  };
}

const b64url = (b) => Buffer.from(b).toString('base64url');
