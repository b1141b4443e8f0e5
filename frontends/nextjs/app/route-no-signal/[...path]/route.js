// The same Route Handler with a common slip: the fetch is not given `request.signal`.
import { forward } from "../../forward.js";

export const dynamic = "force-dynamic";

export async function GET(request, { params }) {
  return forward(request, (await params).path, { passSignal: false });
}
