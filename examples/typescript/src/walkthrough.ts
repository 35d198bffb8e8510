/**
 * The README's walkthrough, made by a TypeScript client generated from proto/ with
 * protoc-gen-es and called over gRPC with Connect's Node transport.
 *
 * It checks, against a running tenantd:
 *  - two tenants with a user each (Acme named by x-tenant-id, Globex by x-tenant-slug); each
 *    lists only its own user, and a cross-tenant GetUser answers NOT_FOUND (USER_NOT_FOUND);
 *  - a suspended tenant answers FAILED_PRECONDITION (TENANT_SUSPENDED), and is served again
 *    once resumed;
 *  - an exactly-once create: the same request_id twice gives one user;
 *  - bad input: INVALID_ARGUMENT with its google.rpc.BadRequest field violation decoded;
 *  - an API key: alone (no x-tenant-* metadata) it reaches Acme's data plane, a READ key cannot
 *    write (API_KEY_SCOPE_INSUFFICIENT), and once revoked it answers UNAUTHENTICATED
 *    (API_KEY_REVOKED);
 *  - clean-up: both tenants soft-deleted, after which their data plane answers NOT_FOUND.
 * Each check prints one line; the exit status is 0 only if every check passed.
 *
 * Usage: node dist/src/walkthrough.js --target 127.0.0.1:50051 --token dev-platform-token
 * (run.sh generates the client, compiles this file and starts a server first).
 */
import { randomBytes, randomUUID } from "node:crypto";
import { parseArgs } from "node:util";

import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import { BadRequestSchema, ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { DiagnosticsService } from "../gen/tenantd/v1/diagnostics_service_pb.js";
import { ApiKey_Scope, TenantService, Tenant_State, type Tenant } from "../gen/tenantd/v1/tenant_service_pb.js";
import { UserService } from "../gen/tenantd/v1/user_service_pb.js";

const TIMEOUT_MS = 10_000;

/** Call options: metadata headers and the deadline every call gets. */
type Headers = Record<string, string>;

class Walkthrough {
  private readonly failures: string[] = [];
  private passed = 0;
  private readonly tenants: Client<typeof TenantService>;
  private readonly users: Client<typeof UserService>;
  private readonly diagnostics: Client<typeof DiagnosticsService>;

  constructor(
    target: string,
    private readonly token: string,
  ) {
    const transport = createGrpcTransport({ baseUrl: `http://${target}` });
    this.tenants = createClient(TenantService, transport);
    this.users = createClient(UserService, transport);
    this.diagnostics = createClient(DiagnosticsService, transport);
  }

  // Reporting ---------------------------------------------------------------------------

  check(passed: boolean, what: string, detail = ""): boolean {
    console.log(`[${passed ? "ok" : "FAIL"}] ${what}${detail ? ` (${detail})` : ""}`);
    if (passed) {
      this.passed += 1;
    } else {
      this.failures.push(what);
    }
    return passed;
  }

  /** `call` must fail with `code` and a google.rpc.ErrorInfo whose reason is `reason`. */
  async expectError(call: () => Promise<unknown>, code: Code, reason: string, what: string): Promise<ConnectError | undefined> {
    try {
      await call();
    } catch (caught) {
      const error = ConnectError.from(caught);
      const got = `${Code[error.code]} ${errorReason(error)}`;
      this.check(error.code === code && errorReason(error) === reason, what, `got ${got}`);
      return error;
    }
    this.check(false, what, "the call succeeded");
    return undefined;
  }

  report(): number {
    console.log(`walkthrough: ${this.passed} passed, ${this.failures.length} failed`);
    for (const failure of this.failures) {
      console.log(`  - ${failure}`);
    }
    return this.failures.length === 0 ? 0 : 1;
  }

  // Metadata ----------------------------------------------------------------------------

  platform(): { headers: Headers; timeoutMs: number } {
    return { headers: { authorization: `Bearer ${this.token}` }, timeoutMs: TIMEOUT_MS };
  }

  tenantId(id: string): { headers: Headers; timeoutMs: number } {
    return { headers: { authorization: `Bearer ${this.token}`, "x-tenant-id": id }, timeoutMs: TIMEOUT_MS };
  }

  tenantSlug(slug: string): { headers: Headers; timeoutMs: number } {
    return { headers: { authorization: `Bearer ${this.token}`, "x-tenant-slug": slug }, timeoutMs: TIMEOUT_MS };
  }

  // Steps -------------------------------------------------------------------------------

  async run(): Promise<void> {
    const suffix = randomBytes(4).toString("hex");
    const acmeSlug = `acme-${suffix}`;
    const globexSlug = `globex-${suffix}`;
    console.log(`== 1. Create two tenants (${acmeSlug}, ${globexSlug})`);
    const acme = await this.tenants.createTenant({ tenant: { slug: acmeSlug, displayName: "Acme" } }, this.platform());
    const globex = await this.tenants.createTenant({ tenant: { slug: globexSlug, displayName: "Globex" } }, this.platform());
    for (const tenant of [acme, globex]) {
      this.check(
        tenant.state === Tenant_State.ACTIVE && tenant.id !== "",
        `created tenant ${tenant.slug}`,
        `id ${tenant.id}, state ${Tenant_State[tenant.state]}`,
      );
    }

    console.log("== 2. Add a user to each (Acme by x-tenant-id, Globex by x-tenant-slug)");
    const alice = await this.users.createUser({ user: { email: "alice@acme.example" } }, this.tenantId(acme.id));
    const bob = await this.users.createUser({ user: { email: "bob@globex.example" } }, this.tenantSlug(globexSlug));
    this.check(alice.id !== "", "created alice@acme.example in Acme", `id ${alice.id}`);
    this.check(bob.id !== "", "created bob@globex.example in Globex", `id ${bob.id}`);

    console.log("== 3. Each tenant sees only its own users");
    await this.expectUsers(acme, ["alice@acme.example"], `Acme lists exactly alice`);
    await this.expectUsers(globex, ["bob@globex.example"], `Globex lists exactly bob`);

    console.log("== 4. Globex cannot read Acme's user");
    await this.expectError(
      () => this.users.getUser({ id: alice.id }, this.tenantId(globex.id)),
      Code.NotFound,
      "USER_NOT_FOUND",
      "cross-tenant GetUser answers NOT_FOUND / USER_NOT_FOUND",
    );
    const own = await this.users.getUser({ id: alice.id }, this.tenantId(acme.id));
    this.check(own.email === "alice@acme.example", "Acme reads its own user", own.email);

    console.log("== 5. Suspend Globex: its data plane answers FAILED_PRECONDITION; resume it");
    const suspended = await this.tenants.suspendTenant({ id: globex.id }, this.platform());
    this.check(suspended.state === Tenant_State.SUSPENDED, "SuspendTenant returns state SUSPENDED", Tenant_State[suspended.state]);
    await this.expectError(
      () => this.users.listUsers({}, this.tenantId(globex.id)),
      Code.FailedPrecondition,
      "TENANT_SUSPENDED",
      "suspended tenant answers FAILED_PRECONDITION / TENANT_SUSPENDED",
    );
    await this.expectUsers(acme, ["alice@acme.example"], "Acme is still served while Globex is suspended");
    const resumed = await this.tenants.resumeTenant({ id: globex.id }, this.platform());
    this.check(resumed.state === Tenant_State.ACTIVE, "ResumeTenant returns state ACTIVE", Tenant_State[resumed.state]);
    await this.expectUsers(globex, ["bob@globex.example"], "resumed tenant lists its user again");

    console.log("== 6. Exactly-once create: the same request_id twice creates one user");
    const requestId = randomUUID();
    const create = () =>
      this.users.createUser({ user: { email: "carol@acme.example" }, requestId }, this.tenantId(acme.id));
    const first = await create();
    const retry = await create();
    this.check(retry.id === first.id, "the retry returns the first response", `ids ${first.id}, ${retry.id}`);
    await this.expectUsers(acme, ["alice@acme.example", "carol@acme.example"], "Acme lists carol once");

    console.log("== 7. Bad input: INVALID_ARGUMENT with a field violation");
    const invalid = await this.expectError(
      () => this.users.createUser({ user: { email: "not-an-email" } }, this.tenantId(acme.id)),
      Code.InvalidArgument,
      "EMAIL_MALFORMED",
      "a malformed email answers INVALID_ARGUMENT / EMAIL_MALFORMED",
    );
    const fields = (invalid?.findDetails(BadRequestSchema) ?? []).flatMap((detail) =>
      detail.fieldViolations.map((violation) => violation.field),
    );
    this.check(fields.includes("user.email"), "its google.rpc.BadRequest names the field user.email", `got ${fields}`);

    await this.apiKeyStep(acme);

    console.log("== 9. Clean-up: soft-delete both tenants");
    for (const tenant of [acme, globex]) {
      const deleted = await this.tenants.deleteTenant({ id: tenant.id }, this.platform());
      this.check(deleted.state === Tenant_State.DELETED, `deleted tenant ${tenant.slug}`, Tenant_State[deleted.state]);
    }
    await this.expectError(
      () => this.users.listUsers({}, this.tenantId(acme.id)),
      Code.NotFound,
      "TENANT_NOT_FOUND",
      "deleted tenant answers NOT_FOUND / TENANT_NOT_FOUND",
    );
  }

  async apiKeyStep(acme: Tenant): Promise<void> {
    console.log("== 8. An API key: it names its tenant by itself, and stops working when revoked");
    const created = await this.tenants.createApiKey(
      { tenantId: acme.id, apiKey: { displayName: "walkthrough", scopes: [ApiKey_Scope.READ] } },
      this.platform(),
    );
    const secret = created.secret;
    this.check(
      secret !== "" && created.apiKey?.tenantId === acme.id,
      "CreateApiKey returns the key and its secret (shown once)",
      `key id ${created.apiKey?.id}`,
    );

    // Only the key: no platform token, no x-tenant-id or x-tenant-slug.
    const keyOnly = { headers: { authorization: `Bearer ${secret}` }, timeoutMs: TIMEOUT_MS };
    const ping = await this.diagnostics.ping({}, keyOnly);
    this.check(ping.tenantId === acme.id, "Ping with the key alone resolves to Acme", `tenant ${ping.tenantId}`);
    const listed = await this.users.listUsers({}, keyOnly);
    this.check(listed.users.length === 2, "the key alone lists Acme's users", `got ${listed.users.length}`);
    await this.expectError(
      () => this.users.createUser({ user: { email: "dave@acme.example" } }, keyOnly),
      Code.PermissionDenied,
      "API_KEY_SCOPE_INSUFFICIENT",
      "a READ key cannot create: PERMISSION_DENIED / API_KEY_SCOPE_INSUFFICIENT",
    );

    const revoked = await this.tenants.revokeApiKey({ tenantId: acme.id, id: created.apiKey?.id ?? "" }, this.platform());
    this.check(revoked.revokeTime !== undefined, "RevokeApiKey sets revoke_time");
    await this.expectError(
      () => this.users.listUsers({}, keyOnly),
      Code.Unauthenticated,
      "API_KEY_REVOKED",
      "the revoked key answers UNAUTHENTICATED / API_KEY_REVOKED",
    );
  }

  async expectUsers(tenant: Tenant, expected: string[], what: string): Promise<void> {
    const listed = await this.users.listUsers({}, this.tenantId(tenant.id));
    const emails = listed.users.map((user) => user.email).sort();
    this.check(JSON.stringify(emails) === JSON.stringify(expected), what, `got ${emails.join(", ")}`);
  }
}

/** The `reason` of the google.rpc.ErrorInfo in the error's details, or "" if none. */
function errorReason(error: ConnectError): string {
  return error.findDetails(ErrorInfoSchema)[0]?.reason ?? "";
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      target: { type: "string", default: "127.0.0.1:50051" },
      token: { type: "string", default: process.env.TENANTD_PLATFORM_TOKEN },
    },
  });
  if (!values.token) {
    console.error("walkthrough: --token (or TENANTD_PLATFORM_TOKEN) is required");
    return 2;
  }
  console.log(`walkthrough: tenantd at ${values.target}`);
  const walkthrough = new Walkthrough(values.target ?? "127.0.0.1:50051", values.token);
  try {
    await walkthrough.run();
  } catch (caught) {
    const error = ConnectError.from(caught);
    walkthrough.check(false, "unexpected RPC error", `${Code[error.code]} ${errorReason(error)}: ${error.rawMessage}`);
  }
  return walkthrough.report();
}

process.exitCode = await main();
