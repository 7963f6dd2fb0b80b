// The admin API client of the console. The bearer token lives in this
// module (and in the tab's sessionStorage) and leaves only in the
// Authorization header of same-origin requests.

const tokenKey = 'deferpush.console.token';

// STALE is what the console says when a write was refused with 412: the
// resource changed since the console read it (its ETag is stale).
export const STALE = 'Changed by someone else since you loaded it: reload to see the current values, then try again.';

// APIError is a refused request, in the admin API's error shape.
export class APIError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field || '';
  }
}

// Client sends admin API requests with one token.
export class Client {
  #token;

  constructor(token) {
    this.#token = token;
  }

  // call sends one request and returns {status, etag, data}. json, when
  // given, is the body; etag, when given, goes in If-Match so that the
  // write is refused (412) if the resource changed since it was read.
  // A refused request throws an APIError.
  async call(method, path, { json, contentType = 'application/json', etag } = {}) {
    const headers = { Authorization: `Bearer ${this.#token}`, Accept: 'application/json' };
    let body;
    if (json !== undefined) {
      headers['Content-Type'] = contentType;
      body = JSON.stringify(json);
    }
    if (etag) {
      headers['If-Match'] = etag;
    }
    let res;
    try {
      res = await fetch(path, { method, headers, body, cache: 'no-store', credentials: 'omit', redirect: 'error' });
    } catch (err) {
      throw new APIError(0, 'network', `the server did not answer (${err.message})`);
    }
    const text = await res.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (res.status === 412) {
      throw new APIError(412, 'precondition_failed', STALE);
    }
    if (!res.ok) {
      const e = data && data.error;
      if (e && typeof e.message === 'string') {
        throw new APIError(res.status, e.code, e.message, e.field);
      }
      throw new APIError(res.status, 'http_' + res.status, `the server answered ${res.status} ${res.statusText}`);
    }
    return { status: res.status, etag: res.headers.get('ETag'), data };
  }

  get(path) {
    return this.call('GET', path);
  }
}

// userPath is /v1/users/{aor}/... with every segment %-escaped.
export function userPath(aor, ...rest) {
  return ['/v1/users', encodeURIComponent(aor), ...rest.map(encodeURIComponent)].join('/');
}

// savedToken is the token this tab logged in with, if any.
export function savedToken() {
  try {
    return sessionStorage.getItem(tokenKey) || '';
  } catch {
    return '';
  }
}

export function saveToken(token) {
  try {
    if (token) {
      sessionStorage.setItem(tokenKey, token);
    } else {
      sessionStorage.removeItem(tokenKey);
    }
  } catch {
    // Storage refused (private mode): the token lives in memory only.
  }
}
