// Signing a reviewer in: OAuth 2.0 authorization code with PKCE (RFC 7636) against the hosted sign-in page
// (Cognito in AWS). The page is a public client: it holds no secret; the code verifier proves that the page
// which started the sign-in is the one redeeming the code, and `state` that the answer belongs to it.
// Tokens live in sessionStorage (this tab only). With no settings (the local stack), nobody signs in.

const KEY = "refund-sorter.sign-in";
export const LOCAL_REVIEWER = "local"; // refund_sorter.api.identity.LOCAL_REVIEWER

function base64url(bytes) {
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export function randomText(byteCount = 32) {
  return base64url(crypto.getRandomValues(new Uint8Array(byteCount)));
}

// RFC 7636 §4.2: code_challenge = BASE64URL(SHA256(ASCII(code_verifier)))
export async function challengeFor(verifier) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier));
  return base64url(new Uint8Array(digest));
}

// The page's own address without query or fragment: the redirect URI registered with the app client.
export function redirectUri(location = window.location) {
  return location.origin + location.pathname;
}

export function authorizeUrl(settings, { state, challenge, redirect }) {
  const url = new URL(settings.authorize_url);
  url.search = new URLSearchParams({
    response_type: "code",
    client_id: settings.client_id,
    redirect_uri: redirect,
    scope: settings.scope,
    state,
    code_challenge: challenge,
    code_challenge_method: "S256",
  }).toString();
  return url.toString();
}

// The claims of a JWT, unverified: only to show who is signed in and when the token expires (the API checks it).
export function claimsOf(token) {
  const payload = token.split(".")[1] || "";
  const binary = atob(payload.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(payload.length / 4) * 4, "="));
  return JSON.parse(new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0))));
}

function load() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY) || "{}");
  } catch {
    return {};
  }
}

function save(value) {
  sessionStorage.setItem(KEY, JSON.stringify(value));
}

export class SignInError extends Error {}

// A signed-in session: hands out a current ID token, refreshing it when it is about to expire.
export class Session {
  constructor(settings, { location = window.location, navigate = (url) => window.location.assign(url) } = {}) {
    this.settings = settings && settings.client_id ? settings : null;
    this.location = location;
    this.navigate = navigate;
  }

  get enabled() {
    return this.settings !== null;
  }

  get user() {
    const tokens = load().tokens;
    if (!tokens) return null;
    const claims = claimsOf(tokens.id_token);
    return claims.email || claims["cognito:username"] || null;
  }

  // Who is signed in, as a key that never changes for them: the ID token's subject (Cognito's user id; an e-mail
  // address can change hands). The local stack has no sign-in: everyone is "local", as the API records them.
  get subject() {
    if (!this.enabled) return LOCAL_REVIEWER;
    const tokens = load().tokens;
    if (!tokens) return null;
    const claims = claimsOf(tokens.id_token);
    return claims.sub || claims["cognito:username"] || claims.email || null;
  }

  // Finish a sign-in that came back to the page (?code=…&state=…), or start one. Resolves when signed in;
  // when it has to leave for the sign-in page it never resolves.
  async start() {
    if (!this.enabled) return;
    const query = new URLSearchParams(this.location.search);
    if (query.has("code") || query.has("error")) {
      await this.finish(query);
      return;
    }
    if (await this.token()) return;
    await this.begin();
  }

  async begin() {
    const verifier = randomText(48);
    const state = randomText(16);
    save({ pending: { verifier, state } });
    const url = authorizeUrl(this.settings, {
      state,
      challenge: await challengeFor(verifier),
      redirect: redirectUri(this.location),
    });
    this.navigate(url);
    return new Promise(() => {}); // the page is leaving
  }

  async finish(query) {
    const pending = load().pending;
    window.history.replaceState(null, "", redirectUri(this.location)); // no code left in the address bar
    if (query.has("error")) {
      throw new SignInError(`sign-in refused: ${query.get("error_description") || query.get("error")}`);
    }
    if (!pending || query.get("state") !== pending.state) {
      save({});
      throw new SignInError("this sign-in answer was not for this page (state mismatch): sign in again");
    }
    await this.exchange({
      grant_type: "authorization_code",
      code: query.get("code"),
      redirect_uri: redirectUri(this.location),
      code_verifier: pending.verifier,
    });
  }

  async exchange(form) {
    let response;
    try {
      response = await fetch(this.settings.token_url, {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ client_id: this.settings.client_id, ...form }).toString(),
      });
    } catch (error) {
      throw new SignInError(`the sign-in service cannot be reached (${error.message})`);
    }
    if (!response.ok) {
      save({});
      throw new SignInError(`the sign-in service refused the token request (${response.status})`);
    }
    const answer = await response.json();
    const previous = load().tokens || {};
    const tokens = {
      id_token: answer.id_token,
      refresh_token: answer.refresh_token || previous.refresh_token,
      expires_at: Date.now() + (answer.expires_in || 3600) * 1000,
    };
    save({ tokens });
    return tokens.id_token;
  }

  // A valid ID token (refreshed if it expires within a minute), or null when a new sign-in is needed.
  async token() {
    if (!this.enabled) return null;
    const tokens = load().tokens;
    if (!tokens) return null;
    if (tokens.expires_at - Date.now() > 60_000) return tokens.id_token;
    if (!tokens.refresh_token) return null;
    try {
      return await this.exchange({ grant_type: "refresh_token", refresh_token: tokens.refresh_token });
    } catch {
      return null;
    }
  }

  // The headers an API call carries: the ID token, as API Gateway's Cognito authorizer reads it.
  async headers() {
    if (!this.enabled) return {};
    const token = await this.token();
    if (!token) await this.begin();
    return { Authorization: token };
  }

  // After a 401: drop the token so the next call refreshes or signs in again.
  expire() {
    const value = load();
    if (value.tokens) {
      value.tokens.expires_at = 0;
      save(value);
    }
  }

  signOut() {
    save({});
    const url = new URL(this.settings.logout_url);
    url.search = new URLSearchParams({ client_id: this.settings.client_id, logout_uri: redirectUri(this.location) });
    this.navigate(url.toString());
  }
}
