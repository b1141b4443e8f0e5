// Lesson 12's Next.js app: the same FastAPI stream reached two ways.
// COURSE_API_PORT is the API's loopback port (course_app.demos.frontend_proxy sets it).
const api = `http://127.0.0.1:${process.env.COURSE_API_PORT ?? "8000"}`;

/** @type {import('next').NextConfig} */
const nextConfig = {
  // Way 1: rewrites(). Next proxies /rewrite/<path> to the API itself.
  async rewrites() {
    return [{ source: "/rewrite/:path*", destination: `${api}/:path*` }];
  },
  // Next gzips every compressible response (the npm `compression` package) unless this is
  // false. COURSE_NEXT_COMPRESS=0 turns it off, to compare.
  compress: process.env.COURSE_NEXT_COMPRESS !== "0",
  // Each running copy gets its own folder: `next dev` locks its folder, and the course
  // runs several at once (a notebook and the tests).
  distDir: process.env.COURSE_NEXT_DIST_DIR || ".next",
  agentRules: false, // `next dev` would otherwise write AGENTS.md into this folder
  experimental: { agentUpgrade: false }, // nor upgrade notes, nor ask the registry about them
};

export default nextConfig;
