#!/usr/bin/env python3
"""The README's walkthrough, made by a Python client generated from proto/.

It checks, against a running tenantd:
  - grpc.health.v1 (grpcio-health-checking): readiness "" and "liveness" are SERVING;
  - server reflection (grpcio-reflection): the service list includes tenantd.v1.TenantService,
    tenantd.v1.OperatorService and tenantd.v1.UserService, and their methods can be described
    (what grpcurl relies on);
  - operators: with the bootstrap token (--token) it creates an ADMIN operator and makes every
    later platform call with that operator's key; a VIEWER operator may list tenants but not
    create one (PERMISSION_DENIED, OPERATOR_ROLE_INSUFFICIENT). --token may also be an
    operator key (tdo_...) itself, which must then be an ADMIN's;
  - the data plane: two tenants with a user each, each tenant lists only its own user, a
    cross-tenant GetUser answers NOT_FOUND (USER_NOT_FOUND), a suspended tenant answers
    FAILED_PRECONDITION (TENANT_SUSPENDED), and a resumed tenant is served again;
  - documents: one per tenant, owned by that tenant's user; each tenant lists only its own, and
    a cross-tenant GetDocument answers NOT_FOUND (DOCUMENT_NOT_FOUND);
  - an API key: created for Acme, it alone (no x-tenant-* metadata) lists Acme's users only;
    once revoked, the same call answers UNAUTHENTICATED (API_KEY_REVOKED);
  - events: WatchEvents replays Acme's events from the walkthrough's start, a stream resumed
    from an event's cursor continues exactly after it, and a damaged cursor answers
    INVALID_ARGUMENT (EVENT_CURSOR_INVALID);
  - clean-up: both tenants are soft-deleted, after which their data plane answers NOT_FOUND.

Each check prints one line; the exit status is 0 only if every check passed.

Usage: python walkthrough.py --target localhost:50051 --token dev-platform-token
(generate the stubs first with generate.sh; they are imported from ./gen).
"""

import argparse
import hashlib
import os
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "gen"))

import grpc  # noqa: E402
from google.protobuf import descriptor_pool  # noqa: E402
from google.protobuf.timestamp_pb2 import Timestamp  # noqa: E402
from google.rpc import error_details_pb2  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc  # noqa: E402
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (  # noqa: E402
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status  # noqa: E402

try:
    from tenantd.v1 import document_service_pb2 as documents_pb  # noqa: E402
    from tenantd.v1 import document_service_pb2_grpc as documents_grpc  # noqa: E402
    from tenantd.v1 import event_service_pb2 as events_pb  # noqa: E402
    from tenantd.v1 import event_service_pb2_grpc as events_grpc  # noqa: E402
    from tenantd.v1 import operator_service_pb2 as operators_pb  # noqa: E402
    from tenantd.v1 import operator_service_pb2_grpc as operators_grpc  # noqa: E402
    from tenantd.v1 import tenant_service_pb2 as tenants_pb  # noqa: E402
    from tenantd.v1 import tenant_service_pb2_grpc as tenants_grpc  # noqa: E402
    from tenantd.v1 import user_service_pb2 as users_pb  # noqa: E402
    from tenantd.v1 import user_service_pb2_grpc as users_grpc  # noqa: E402
except ImportError as error:
    sys.exit(f"walkthrough: generated stubs are missing ({error}); run examples/python/generate.sh first")

TIMEOUT_SECONDS = 10
SERVICES = ("tenantd.v1.TenantService", "tenantd.v1.OperatorService", "tenantd.v1.UserService")


class Walkthrough:
    def __init__(self, channel: grpc.Channel, token: str):
        self.channel = channel
        self.auth = ("authorization", f"Bearer {token}")
        self.tenants = tenants_grpc.TenantServiceStub(channel)
        self.operators = operators_grpc.OperatorServiceStub(channel)
        self.bootstrap = not token.startswith("tdo_")
        self.failures: list[str] = []
        self.started = Timestamp(seconds=int(time.time()) - 2)

    # Reporting -------------------------------------------------------------------------

    def check(self, passed: bool, what: str, detail: str = "") -> bool:
        print(f"[{'ok' if passed else 'FAIL'}] {what}" + (f" ({detail})" if detail else ""), flush=True)
        if not passed:
            self.failures.append(what)
        return passed

    def expect_error(self, call, code: grpc.StatusCode, reason: str, what: str) -> None:
        """`call` must fail with `code` and a google.rpc.ErrorInfo whose reason is `reason`."""
        try:
            call()
        except grpc.RpcError as error:
            got = (error.code(), error_reason(error))
            self.check(got == (code, reason), what, f"got {got[0].name} {got[1]}")
            return
        self.check(False, what, "the call succeeded")

    # Metadata --------------------------------------------------------------------------

    def platform(self):
        return [self.auth]

    def tenant_id(self, tenant_id: str):
        return [self.auth, ("x-tenant-id", tenant_id)]

    def tenant_slug(self, slug: str):
        return [self.auth, ("x-tenant-slug", slug)]

    def users(self) -> users_grpc.UserServiceStub:
        return users_grpc.UserServiceStub(self.channel)

    def documents(self) -> documents_grpc.DocumentServiceStub:
        return documents_grpc.DocumentServiceStub(self.channel)

    # Steps -----------------------------------------------------------------------------

    def health(self) -> None:
        print("== 1. Health (no metadata, as Kubernetes probes send none)")
        health = health_pb2_grpc.HealthStub(self.channel)
        for service in ("", "liveness"):
            response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT_SECONDS)
            status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
            self.check(status == "SERVING", f'health "{service}" is SERVING', status)

    def reflection(self) -> None:
        print("== 1. Reflection (what grpcurl uses instead of proto files)")
        stub = reflection_pb2_grpc.ServerReflectionStub(self.channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        responses = stub.ServerReflectionInfo(iter([request]), timeout=TIMEOUT_SECONDS)
        listed = sorted(service.name for response in responses for service in response.list_services_response.service)
        print("   services: " + ", ".join(listed))
        for name in SERVICES:
            self.check(name in listed, f"reflection lists {name}")
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(self.channel))
        for name in SERVICES:
            methods = [method.name for method in pool.FindServiceByName(name).methods]
            self.check(bool(methods), f"reflection describes {name}", ", ".join(methods))

    def create_operator(self, name: str, role: int) -> str:
        created = self.operators.CreateOperator(
            operators_pb.CreateOperatorRequest(operator=operators_pb.Operator(display_name=name, role=role)),
            metadata=self.platform(),
            timeout=TIMEOUT_SECONDS,
        )
        self.check(created.secret.startswith("tdo_"), f"CreateOperator returns {name}'s key (shown once)")
        return created.secret

    def operators_and_roles(self) -> None:
        print("== 1. Operators: named platform credentials with roles")
        if self.bootstrap:
            admin = self.create_operator("walkthrough admin", operators_pb.Operator.ADMIN)
            # From here on every platform call names this operator in the audit trail.
            self.auth = ("authorization", f"Bearer {admin}")
        viewer = [("authorization", f"Bearer {self.create_operator('walkthrough viewer', operators_pb.Operator.VIEWER)}")]
        self.tenants.ListTenants(tenants_pb.ListTenantsRequest(), metadata=viewer, timeout=TIMEOUT_SECONDS)
        self.check(True, "a VIEWER lists tenants")
        request = tenants_pb.CreateTenantRequest(tenant=tenants_pb.Tenant(slug=f"viewer-{secrets.token_hex(4)}", display_name="V"))
        self.expect_error(
            lambda: self.tenants.CreateTenant(request, metadata=viewer, timeout=TIMEOUT_SECONDS),
            grpc.StatusCode.PERMISSION_DENIED,
            "OPERATOR_ROLE_INSUFFICIENT",
            "a VIEWER cannot create a tenant: PERMISSION_DENIED / OPERATOR_ROLE_INSUFFICIENT",
        )

    def run(self) -> None:
        self.health()
        self.reflection()
        self.operators_and_roles()

        suffix = secrets.token_hex(4)
        acme_slug, globex_slug = f"acme-{suffix}", f"globex-{suffix}"
        print(f"== 2. Create two tenants ({acme_slug}, {globex_slug})")
        acme = self.tenants.CreateTenant(
            tenants_pb.CreateTenantRequest(tenant=tenants_pb.Tenant(slug=acme_slug, display_name="Acme")),
            metadata=self.platform(),
            timeout=TIMEOUT_SECONDS,
        )
        globex = self.tenants.CreateTenant(
            tenants_pb.CreateTenantRequest(tenant=tenants_pb.Tenant(slug=globex_slug, display_name="Globex")),
            metadata=self.platform(),
            timeout=TIMEOUT_SECONDS,
        )
        for tenant in (acme, globex):
            self.check(
                tenant.state == tenants_pb.Tenant.ACTIVE and bool(tenant.id),
                f"created tenant {tenant.slug}",
                f"id {tenant.id}, state {tenants_pb.Tenant.State.Name(tenant.state)}",
            )

        print("== 3. Add a user to each (Acme by x-tenant-id, Globex by x-tenant-slug)")
        users = self.users()
        alice = users.CreateUser(
            users_pb.CreateUserRequest(user=users_pb.User(email="alice@acme.example")),
            metadata=self.tenant_id(acme.id),
            timeout=TIMEOUT_SECONDS,
        )
        bob = users.CreateUser(
            users_pb.CreateUserRequest(user=users_pb.User(email="bob@globex.example")),
            metadata=self.tenant_slug(globex_slug),
            timeout=TIMEOUT_SECONDS,
        )
        self.check(bool(alice.id), "created alice@acme.example in Acme", f"id {alice.id}")
        self.check(bool(bob.id), "created bob@globex.example in Globex", f"id {bob.id}")

        print("== 4. Each tenant sees only its own users")
        for tenant, expected in ((acme, ["alice@acme.example"]), (globex, ["bob@globex.example"])):
            listed = users.ListUsers(users_pb.ListUsersRequest(), metadata=self.tenant_id(tenant.id), timeout=TIMEOUT_SECONDS)
            emails = [user.email for user in listed.users]
            self.check(emails == expected, f"{tenant.display_name} lists exactly {expected}", f"got {emails}")

        print("== 5. Globex cannot read Acme's user")
        self.expect_error(
            lambda: users.GetUser(users_pb.GetUserRequest(id=alice.id), metadata=self.tenant_id(globex.id), timeout=TIMEOUT_SECONDS),
            grpc.StatusCode.NOT_FOUND,
            "USER_NOT_FOUND",
            "cross-tenant GetUser answers NOT_FOUND / USER_NOT_FOUND",
        )
        own = users.GetUser(users_pb.GetUserRequest(id=alice.id), metadata=self.tenant_id(acme.id), timeout=TIMEOUT_SECONDS)
        self.check(own.email == "alice@acme.example", "Acme reads its own user", own.email)

        print("== 6. Suspend Globex: its data plane answers FAILED_PRECONDITION")
        suspended = self.tenants.SuspendTenant(
            tenants_pb.SuspendTenantRequest(id=globex.id), metadata=self.platform(), timeout=TIMEOUT_SECONDS
        )
        self.check(
            suspended.state == tenants_pb.Tenant.SUSPENDED,
            "SuspendTenant returns the tenant in state SUSPENDED",
            tenants_pb.Tenant.State.Name(suspended.state),
        )
        self.expect_error(
            lambda: users.ListUsers(users_pb.ListUsersRequest(), metadata=self.tenant_id(globex.id), timeout=TIMEOUT_SECONDS),
            grpc.StatusCode.FAILED_PRECONDITION,
            "TENANT_SUSPENDED",
            "suspended tenant answers FAILED_PRECONDITION / TENANT_SUSPENDED",
        )
        still = users.ListUsers(users_pb.ListUsersRequest(), metadata=self.tenant_id(acme.id), timeout=TIMEOUT_SECONDS)
        self.check(len(still.users) == 1, "Acme is still served while Globex is suspended")

        print("== 7. Resume Globex: it is served again")
        resumed = self.tenants.ResumeTenant(
            tenants_pb.ResumeTenantRequest(id=globex.id), metadata=self.platform(), timeout=TIMEOUT_SECONDS
        )
        self.check(
            resumed.state == tenants_pb.Tenant.ACTIVE,
            "ResumeTenant returns the tenant in state ACTIVE",
            tenants_pb.Tenant.State.Name(resumed.state),
        )
        served = users.ListUsers(users_pb.ListUsersRequest(), metadata=self.tenant_id(globex.id), timeout=TIMEOUT_SECONDS)
        emails = [user.email for user in served.users]
        self.check(emails == ["bob@globex.example"], "resumed tenant lists its user again", f"got {emails}")

        self.documents_step(acme, alice, globex, globex_slug, bob)
        self.api_key_step(acme)
        self.events_step(acme)

        print("== Clean-up: soft-delete both tenants")
        for tenant in (acme, globex):
            deleted = self.tenants.DeleteTenant(
                tenants_pb.DeleteTenantRequest(id=tenant.id), metadata=self.platform(), timeout=TIMEOUT_SECONDS
            )
            self.check(
                deleted.state == tenants_pb.Tenant.DELETED,
                f"deleted tenant {tenant.slug}",
                tenants_pb.Tenant.State.Name(deleted.state),
            )
        self.expect_error(
            lambda: users.ListUsers(users_pb.ListUsersRequest(), metadata=self.tenant_id(acme.id), timeout=TIMEOUT_SECONDS),
            grpc.StatusCode.NOT_FOUND,
            "TENANT_NOT_FOUND",
            "deleted tenant answers NOT_FOUND / TENANT_NOT_FOUND",
        )


    def documents_step(self, acme, alice, globex, globex_slug: str, bob) -> None:
        print("== 8. Documents: one per tenant, owned by that tenant's user")
        documents = self.documents()
        created = {}
        for tenant, metadata, owner, title in (
            (acme, self.tenant_id(acme.id), alice, "Acme roadmap"),
            (globex, self.tenant_slug(globex_slug), bob, "Globex budget"),
        ):
            content = f"{title}: for {owner.email} only".encode()
            document = documents.CreateDocument(
                documents_pb.CreateDocumentRequest(
                    document=documents_pb.Document(title=title, content=content, owner_user_id=owner.id)
                ),
                metadata=metadata,
                timeout=TIMEOUT_SECONDS,
            )
            created[tenant.id] = document
            self.check(
                bool(document.id)
                and document.owner_user_id == owner.id
                and document.content_sha256 == hashlib.sha256(content).hexdigest(),
                f"created document {title!r} in {tenant.display_name}, owned by {owner.email}",
                f"id {document.id}, sha256 {document.content_sha256[:12]}...",
            )

        for tenant in (acme, globex):
            listed = documents.ListDocuments(
                documents_pb.ListDocumentsRequest(), metadata=self.tenant_id(tenant.id), timeout=TIMEOUT_SECONDS
            )
            ids = [document.id for document in listed.documents]
            expected = [created[tenant.id].id]
            self.check(ids == expected, f"{tenant.display_name} lists exactly its own document", f"got {ids}")

        acme_document = created[acme.id]
        own = documents.GetDocument(
            documents_pb.GetDocumentRequest(id=acme_document.id), metadata=self.tenant_id(acme.id), timeout=TIMEOUT_SECONDS
        )
        self.check(own.title == acme_document.title, "Acme reads its own document", own.title)
        self.expect_error(
            lambda: documents.GetDocument(
                documents_pb.GetDocumentRequest(id=acme_document.id),
                metadata=self.tenant_id(globex.id),
                timeout=TIMEOUT_SECONDS,
            ),
            grpc.StatusCode.NOT_FOUND,
            "DOCUMENT_NOT_FOUND",
            "cross-tenant GetDocument answers NOT_FOUND / DOCUMENT_NOT_FOUND",
        )

    def api_key_step(self, acme) -> None:
        print("== 9. An API key: it names its tenant by itself, and stops working when revoked")
        created = self.tenants.CreateApiKey(
            tenants_pb.CreateApiKeyRequest(
                tenant_id=acme.id,
                api_key=tenants_pb.ApiKey(display_name="walkthrough", scopes=[tenants_pb.ApiKey.READ]),
            ),
            metadata=self.platform(),
            timeout=TIMEOUT_SECONDS,
        )
        secret = created.secret
        self.check(
            bool(secret) and created.api_key.tenant_id == acme.id,
            "CreateApiKey returns the key and its secret (shown once)",
            f"key id {created.api_key.id}",
        )

        # Only the key: no platform token, no x-tenant-id or x-tenant-slug.
        key_only = [("authorization", f"Bearer {secret}")]
        users = self.users()
        listed = users.ListUsers(users_pb.ListUsersRequest(), metadata=key_only, timeout=TIMEOUT_SECONDS)
        emails = [user.email for user in listed.users]
        self.check(emails == ["alice@acme.example"], "the key alone lists exactly Acme's users", f"got {emails}")

        revoked = self.tenants.RevokeApiKey(
            tenants_pb.RevokeApiKeyRequest(tenant_id=acme.id, id=created.api_key.id),
            metadata=self.platform(),
            timeout=TIMEOUT_SECONDS,
        )
        self.check(revoked.HasField("revoke_time"), "RevokeApiKey sets revoke_time")
        self.expect_error(
            lambda: users.ListUsers(users_pb.ListUsersRequest(), metadata=key_only, timeout=TIMEOUT_SECONDS),
            grpc.StatusCode.UNAUTHENTICATED,
            "API_KEY_REVOKED",
            "the revoked key answers UNAUTHENTICATED / API_KEY_REVOKED",
        )


    def read_events(self, request, count: int) -> list:
        """The first `count` events of a WatchEvents stream; the stream is then cancelled."""
        call = events_grpc.EventServiceStub(self.channel).WatchEvents(
            request, metadata=self.platform(), timeout=TIMEOUT_SECONDS
        )
        events = []
        try:
            for message in call:
                events.extend(message.events)
                if len(events) >= count:
                    break
        finally:
            call.cancel()
        return events[:count]

    def events_step(self, acme) -> None:
        print("== Events: replay, then resume from a cursor")
        since = events_pb.WatchEventsRequest(tenant_ids=[acme.id], start_time=self.started)
        first = self.read_events(since, 4)
        types = [event.event_type for event in first]
        self.check(
            len(first) == 4 and types[0] == "tenant.create" and all(e.tenant_id == acme.id for e in first),
            "WatchEvents replays Acme's events from the start",
            ", ".join(types),
        )
        # A client that went away after the second event comes back with its cursor.
        resume = events_pb.WatchEventsRequest(tenant_ids=[acme.id], cursor=first[1].cursor)
        resumed = self.read_events(resume, 2)
        self.check(
            [event.id for event in resumed] == [event.id for event in first[2:4]],
            "a stream resumed from a cursor continues exactly after it",
        )
        damaged = events_pb.WatchEventsRequest(cursor=first[1].cursor[:-4] + "AAAA")
        self.expect_error(
            lambda: self.read_events(damaged, 1),
            grpc.StatusCode.INVALID_ARGUMENT,
            "EVENT_CURSOR_INVALID",
            "a damaged cursor answers INVALID_ARGUMENT / EVENT_CURSOR_INVALID",
        )


def error_reason(error: grpc.RpcError) -> str:
    """The `reason` of the google.rpc.ErrorInfo in the error's details, or "" if none."""
    status = rpc_status.from_call(error)
    if status is None:
        return ""
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


def open_channel(args: argparse.Namespace) -> grpc.Channel:
    """A plaintext channel, or a TLS one verifying the server against --tls-ca-file."""
    if not args.tls_ca_file:
        return grpc.insecure_channel(args.target)
    with open(args.tls_ca_file, "rb") as file:
        root_certificates = file.read()
    private_key = certificate_chain = None
    if args.tls_cert_file:
        with open(args.tls_key_file, "rb") as file:
            private_key = file.read()
        with open(args.tls_cert_file, "rb") as file:
            certificate_chain = file.read()
    credentials = grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
    options = [("grpc.ssl_target_name_override", args.tls_server_name)] if args.tls_server_name else []
    return grpc.secure_channel(args.target, credentials, options=options)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="localhost:50051", help="host:port of tenantd")
    parser.add_argument(
        "--tls-ca-file",
        default=os.environ.get("TENANTD_CLIENT_TLS_CA_FILE"),
        help="connect with TLS, trusting the CA certificates in this PEM file (default: plaintext)",
    )
    parser.add_argument("--tls-cert-file", help="PEM client certificate, for a server that requires one (mTLS)")
    parser.add_argument("--tls-key-file", help="PEM private key of --tls-cert-file")
    parser.add_argument("--tls-server-name", help="name the server's certificate must carry (default: the target's host)")
    parser.add_argument(
        "--token",
        default=os.environ.get("TENANTD_PLATFORM_TOKEN"),
        help="platform credential: the bootstrap token or an ADMIN operator key (default: $TENANTD_PLATFORM_TOKEN)",
    )
    args = parser.parse_args()
    if not args.token:
        parser.error("--token (or TENANTD_PLATFORM_TOKEN) is required")

    if bool(args.tls_cert_file) != bool(args.tls_key_file):
        parser.error("--tls-cert-file and --tls-key-file go together")
    if args.tls_cert_file and not args.tls_ca_file:
        parser.error("--tls-cert-file needs --tls-ca-file")

    print(f"walkthrough: tenantd at {args.target}" + (" (TLS)" if args.tls_ca_file else ""))
    with open_channel(args) as channel:
        walkthrough = Walkthrough(channel, args.token)
        try:
            walkthrough.run()
        except grpc.RpcError as error:
            walkthrough.check(False, "unexpected RPC error", f"{error.code().name} {error_reason(error)}: {error.details()}")
    if walkthrough.failures:
        print(f"walkthrough: FAILED, {len(walkthrough.failures)} check(s) failed:")
        for failure in walkthrough.failures:
            print(f"  - {failure}")
        return 1
    print("walkthrough: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
