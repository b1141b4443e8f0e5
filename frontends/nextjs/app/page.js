export default function Home() {
  return (
    <main>
      <h1>Lesson 12: Next.js in front of a FastAPI stream</h1>
      <ul>
        <li>
          <code>/rewrite/&lt;path&gt;</code>: <code>rewrites()</code> in next.config.mjs
        </li>
        <li>
          <code>/route/&lt;path&gt;</code>: the Route Handler in app/route/[...path]/route.js
          (its work is in app/forward.js)
        </li>
        <li>
          <code>/route-no-signal/&lt;path&gt;</code>: the same without <code>request.signal</code>
        </li>
      </ul>
    </main>
  );
}
