// What both Route Handlers do: fetch the API and hand its body to Next as a stream.
const api = () => `http://127.0.0.1:${process.env.COURSE_API_PORT ?? "8000"}`;

export async function forward(request, path, { passSignal = true } = {}) {
  const { search } = new URL(request.url);
  const upstream = await fetch(`${api()}/${path.join("/")}${search}`, {
    headers: { accept: request.headers.get("accept") ?? "*/*" },
    // The browser left: abort this fetch, which closes the API's stream. Next does not
    // cancel the body below by itself when the client leaves (vercel/next.js#93906).
    signal: passSignal ? request.signal : undefined,
  });
  const headers = new Headers();
  for (const name of ["content-type", "cache-control", "x-accel-buffering"]) {
    const value = upstream.headers.get(name);
    if (value !== null) headers.set(name, value);
  }
  // The body itself, not `await upstream.text()`: Next writes and flushes each chunk.
  return new Response(upstream.body, { status: upstream.status, headers });
}
