// The HTTP API client: JSON in and out, errors as APIError with the
// server's {"error", "code"}.

export class APIError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status; // 0: the server could not be reached
    this.code = code;
  }
}

export class API {
  // token: a user or admin token sent as Authorization: Bearer; null to
  // rely on the inbox_token cookie.
  constructor(token) {
    this.token = token;
  }

  async request(method, path, body, headers = {}) {
    const init = { method, headers: { ...headers }, credentials: 'same-origin', cache: 'no-store' };
    if (this.token) init.headers.Authorization = `Bearer ${this.token}`;
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch {
      throw new APIError(0, 'network', 'the server cannot be reached');
    }
    let data = null;
    const text = await res.text();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!res.ok) {
      throw new APIError(res.status, data?.code ?? `http_${res.status}`, data?.error ?? `HTTP ${res.status}`);
    }
    return data;
  }

  get(path) {
    return this.request('GET', path);
  }

  post(path, body, headers) {
    return this.request('POST', path, body, headers);
  }
}
