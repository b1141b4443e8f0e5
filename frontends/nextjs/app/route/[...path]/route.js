// A Route Handler: /route/<path> fetches the API's <path> and streams its answer on.
import { forward } from "../../forward.js";

export const dynamic = "force-dynamic"; // read the environment and fetch on every request

export async function GET(request, { params }) {
  return forward(request, (await params).path);
}
