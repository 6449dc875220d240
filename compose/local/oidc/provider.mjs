// A real OpenID provider on loopback for Axle's sign-in tests and for trying OIDC locally:
// panva's oidc-provider (OpenID Certified), with a password form of our own instead of the
// package's development login (which accepts any password).
//
// Configuration, all from the environment:
//   OIDC_PORT (required), OIDC_ISSUER (default http://127.0.0.1:$OIDC_PORT)
//   OIDC_CLIENT_ID, OIDC_CLIENT_SECRET_FILE, OIDC_REDIRECT_URIS (space-separated)
//   OIDC_ACCOUNTS_FILE: JSON {"username": {"password": "...", "email": "...", "name": "...",
//     "groups": ["..."], "disabled": false}}; read at every sign-in, so a test can change groups.
//   OIDC_ID_TOKEN_TTL: seconds an ID token is valid (default 600).
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import { URLSearchParams } from 'node:url';

import Provider from 'oidc-provider';

const port = Number(process.env.OIDC_PORT);
if (!port) throw new Error('OIDC_PORT is required');
const issuer = process.env.OIDC_ISSUER || `http://127.0.0.1:${port}`;
const accountsFile = process.env.OIDC_ACCOUNTS_FILE;
const secret = fs.readFileSync(process.env.OIDC_CLIENT_SECRET_FILE, 'utf8').trim();

function accounts() {
  return JSON.parse(fs.readFileSync(accountsFile, 'utf8'));
}

function escape(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const provider = new Provider(issuer, {
  clients: [{
    client_id: process.env.OIDC_CLIENT_ID || 'axle',
    client_secret: secret,
    redirect_uris: (process.env.OIDC_REDIRECT_URIS || '').split(' ').filter(Boolean),
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_post',
  }],
  pkce: { required: () => true },
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username'],
    groups: ['groups'],
  },
  scopes: ['openid', 'email', 'profile', 'groups'],
  conformIdTokenClaims: false, // the ID token carries the claims asked for, groups included
  features: { devInteractions: { enabled: false } },
  ttl: { IdToken: Number(process.env.OIDC_ID_TOKEN_TTL || 600) },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  async findAccount(ctx, id) {
    const account = accounts()[id];
    if (!account || account.disabled) return undefined;
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          preferred_username: id,
          name: account.name || id,
          email: account.email || `${id}@example.org`,
          email_verified: true,
          groups: account.groups || [],
        };
      },
    };
  },
});
provider.proxy = false;

function form(uid, message) {
  return `<!doctype html><html><head><title>Test directory · sign in</title></head><body>
<h1>Test directory</h1>${message ? `<p role="alert">${escape(message)}</p>` : ''}
<form method="post" action="/interaction/${escape(uid)}">
<label>Username <input name="login" autocomplete="username" required></label>
<label>Password <input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit">Sign in</button></form></body></html>`;
}

async function readBody(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 10000) throw new Error('body too large');
  }
  return new URLSearchParams(body);
}

async function interaction(req, res, uid) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');
  if (req.method === 'GET') {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(form(uid));
    return;
  }
  const body = await readBody(req);
  const login = body.get('login') || '';
  const account = accounts()[login];
  const ok = account && !account.disabled && typeof account.password === 'string'
    && crypto.timingSafeEqual(
      crypto.createHash('sha256').update(account.password).digest(),
      crypto.createHash('sha256').update(body.get('password') || '').digest(),
    );
  if (!ok) {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(form(uid, 'Wrong username or password.'));
    return;
  }
  // One page: signing in also grants what the hub asked for (a site's own provider does
  // this for its first-party applications).
  const grant = new provider.Grant({ accountId: login, clientId: details.params.client_id });
  grant.addOIDCScope(String(details.params.scope));
  grant.addOIDCClaims(['email', 'name', 'preferred_username', 'groups']);
  const grantId = await grant.save();
  await provider.interactionFinished(req, res, { login: { accountId: login }, consent: { grantId } }, {
    mergeWithLastSubmission: false,
  });
}

const callback = provider.callback();
http.createServer(async (req, res) => {
  const match = /^\/interaction\/([A-Za-z0-9_-]+)$/.exec(req.url.split('?')[0]);
  if (match) {
    try {
      await interaction(req, res, match[1]);
    } catch (err) {
      res.writeHead(400, { 'content-type': 'text/plain' });
      res.end(`sign-in failed: ${err.message}`);
    }
    return;
  }
  callback(req, res);
}).listen(port, '127.0.0.1', () => {
  console.log(`oidc provider ${issuer} listening on 127.0.0.1:${port}`);
});
