// The local stack's OpenID Connect provider: node-oidc-provider (a certified
// implementation) behind HTTPS with the stack's certificate.
//
// Started by `mailintake stack up` as `node server.mjs CONFIG.json`; the JSON file is
// written by mailintake/stack/oidc_provider.py and holds the port, the TLS files, the
// registered clients and the mailboxes. Nothing here is mailintake logic: it only maps
// the stack's mailboxes to token claims so that Dovecot's oauth2 passdb can tell whose
// token it introspects.
//
// How a token names its mailbox (the `username` claim, which Dovecot compares with the
// SASL user):
// - delegated tokens (authorization code + PKCE, then refresh token): the signed-in
//   mailbox, e.g. alice@mailintake.test;
// - app-only tokens (client credentials): the mailbox named by the one scope
//   `mailbox:ADDRESS` requested. A client may ask only for the mailboxes its
//   registration lists in `scope`, the local stand-in for Exchange Online's mailbox
//   permissions of a service principal.

import { createServer } from 'node:https';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync, existsSync, renameSync } from 'node:fs';

import Koa from 'koa';
import mount from 'koa-mount';
import Provider, { errors } from 'oidc-provider';

const configPath = process.argv[2];
if (!configPath) {
  console.error('usage: node server.mjs CONFIG.json');
  process.exit(2);
}
const config = JSON.parse(readFileSync(configPath, 'utf8'));

// Signing keys and cookie keys survive restarts, so ID tokens and sessions of
// a previous run still verify.
function persistentSecrets(path) {
  if (existsSync(path)) return JSON.parse(readFileSync(path, 'utf8'));
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...privateKey.export({ format: 'jwk' }), kid: randomBytes(8).toString('hex'), use: 'sig', alg: 'RS256' };
  const secrets = { jwks: { keys: [jwk] }, cookieKeys: [randomBytes(32).toString('base64url')] };
  writeFileSync(`${path}.tmp`, JSON.stringify(secrets), { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
  return secrets;
}
const secrets = persistentSecrets(config.secrets_file);

const mailboxes = new Set(config.mailboxes);
const mailboxScope = (address) => `mailbox:${address}`;

function mailboxOf(login) {
  const name = String(login).toLowerCase();
  const address = name.includes('@') ? name : `${name}@${config.mail_domain}`;
  return mailboxes.has(address) ? address : undefined;
}

// Per-client access-token lifetime, so tests see expiry on one client without
// shortening everyone's tokens.
const accessTokenTtl = (client) => config.access_token_ttl_by_client[client?.clientId] ?? config.access_token_ttl;

const provider = new Provider(config.issuer, {
  clients: config.clients,
  jwks: secrets.jwks,
  cookies: { keys: secrets.cookieKeys },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'mail', ...[...mailboxes].map(mailboxScope)],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['preferred_username'] },
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: { enabled: false },
  },
  async findAccount(ctx, sub) {
    const address = mailboxOf(sub);
    if (!address) return undefined;
    return {
      accountId: sub,
      async claims() {
        return { sub, email: address, email_verified: true, preferred_username: address };
      },
    };
  },
  async extraTokenClaims(ctx, token) {
    if (token.kind === 'ClientCredentials') {
      const wanted = (token.scope || '').split(' ').filter((s) => s.startsWith('mailbox:'));
      if (wanted.length > 1) {
        throw new errors.InvalidScope('an app-only token is for one mailbox: request one mailbox:ADDRESS scope');
      }
      return wanted.length ? { username: wanted[0].slice('mailbox:'.length) } : undefined;
    }
    if (token.accountId) {
      const address = mailboxOf(token.accountId);
      return address ? { username: address, email: address } : undefined;
    }
    return undefined;
  },
  // Every refresh returns a new refresh token (and retires the old one), as
  // Microsoft's identity platform does: clients must store the rotated one.
  rotateRefreshToken: () => true,
  ttl: {
    AccessToken: (ctx, token, client) => accessTokenTtl(client),
    ClientCredentials: (ctx, token, client) => accessTokenTtl(client),
    AuthorizationCode: 60,
    IdToken: 3600,
    Interaction: 3600,
    Session: 86400,
    Grant: 14 * 86400,
    RefreshToken: config.refresh_token_ttl,
  },
  // Loopback HTTP only: this provider never leaves 127.0.0.1.
  clientBasedCORS: () => false,
});

// The issuer has a path (a "tenant": msal takes an OpenID Connect authority only with
// one); the provider is mounted there, as its documentation shows for Koa.
const mountPath = new URL(config.issuer).pathname.replace(/\/$/, '');
const app = new Koa();
// koa-mount runs the provider's middleware on this app's context: its cookies are signed with these keys.
app.keys = secrets.cookieKeys;
app.use(mount(mountPath || '/', provider));
const server = createServer(
  { cert: readFileSync(config.server_cert), key: readFileSync(config.server_key) },
  app.callback(),
);
server.listen(config.port, config.host, () => {
  console.log(`oidc-provider ${config.issuer} listening on ${config.host}:${config.port}`);
});

const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
