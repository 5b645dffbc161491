"""Runs inside the dev services' Keystone venv: sets Keystone up, then serves it.

    keystone_runner.py serve ETC_DIR/keystone.json

ETC_DIR holds keystone.conf and keystone.json (written by devtools/keystone.py, mode 600: the
passwords and ids to provision, the port, the TLS files). Secrets are read from that file,
never from the command line.

Set-up runs in a forked child, then the parent serves: a process that ran `keystone-manage
bootstrap` cannot serve any more (bootstrap locks keystone's provider registry), and the
child shares the parent's imports (~4 s), so setting up costs ~1 s more instead of ~5 s per
step. Every step is idempotent, so each start repeats them: a changed port updates the
endpoints. Set-up: fernet and credential keys (first start only), db_sync, bootstrap (admin,
the roles, the identity endpoint), then through keystone's own managers (as bootstrap does):
project `cloudfs` with user `cloudfs` (role member), project `service` with user `swift`
(roles admin and service: the proxy's auth_token validates tokens as it), the `swift`
object-store endpoint, and an application credential of user `cloudfs`.

Serving: werkzeug's threaded server (a Flask dependency: HTTP/1.1, https with the given
certificate). Executed by path, it imports nothing from the project; its directory holds no
module named like a package it imports.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any


def manage(conf: str, *cmd: str) -> None:
    import keystone.conf
    from keystone.cmd import cli

    keystone.conf.CONF.clear()
    cli.main(argv=["keystone-manage", "--config-file", conf, *cmd])


def setup(etc: Path, state: dict[str, Any]) -> None:
    import grp
    import pwd

    conf = str(etc / "keystone.conf")
    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    for step, repo in (("fernet_setup", "fernet-keys"), ("credential_setup", "credential-keys")):
        if not any((etc.parent / "keystone" / repo).glob("*")):
            manage(conf, step, "--keystone-user", user, "--keystone-group", group)
    manage(conf, "db_sync")
    os.environ["OS_BOOTSTRAP_PASSWORD"] = state["admin_password"]  # not on a command line
    manage(conf, "bootstrap", "--bootstrap-username", "admin", "--bootstrap-project-name",
           "admin", "--bootstrap-role-name", "admin", "--bootstrap-service-name", "keystone",
           "--bootstrap-region-id", state["region"], "--bootstrap-public-url",
           state["auth_url"])
    provision(state)


def provision(state: dict[str, Any]) -> None:
    from keystone import exception
    from keystone.common import provider_api

    api = provider_api.ProviderAPIs
    domain = "default"
    roles = {r["name"]: r for r in api.role_api.list_roles()}
    for name in ("member", "service", "admin"):
        if name not in roles:
            roles[name] = api.role_api.create_role(state["ids"][f"role_{name}"],
                                                   {"id": state["ids"][f"role_{name}"],
                                                    "name": name, "domain_id": None})

    def project(name: str) -> dict[str, Any]:
        try:
            return api.resource_api.get_project_by_name(name, domain)
        except exception.ProjectNotFound:
            pid = state["ids"][f"project_{name}"]
            return api.resource_api.create_project(pid, {
                "id": pid, "name": name, "domain_id": domain, "parent_id": domain,
                "enabled": True, "is_domain": False, "description": "cloudfs dev"})

    def user(name: str, password: str, project_id: str, role_names: tuple[str, ...]
             ) -> dict[str, Any]:
        try:
            found = api.identity_api.get_user_by_name(name, domain)
        except exception.UserNotFound:
            found = api.identity_api.create_user({
                "name": name, "domain_id": domain, "enabled": True, "password": password,
                "default_project_id": project_id})
        for role in role_names:
            try:
                api.assignment_api.add_role_to_user_and_project(
                    user_id=found["id"], project_id=project_id, role_id=roles[role]["id"])
            except exception.Conflict:
                pass
        return found

    cloudfs = project(state["project"])
    service = project("service")
    owner = user(state["user"], state["password"], cloudfs["id"], ("member",))
    user("swift", state["swift_password"], service["id"], ("admin", "service"))

    services = [s for s in api.catalog_api.list_services() if s["type"] == "object-store"]
    if services:
        swift = services[0]
    else:
        sid = state["ids"]["service_swift"]
        swift = api.catalog_api.create_service(sid, {"id": sid, "type": "object-store",
                                                     "name": "swift", "enabled": True})
    url = state["swift_url"] + "/v1/AUTH_%(project_id)s"
    endpoints = [e for e in api.catalog_api.list_endpoints()
                 if e["service_id"] == swift["id"] and e["interface"] == "public"]
    if endpoints:
        if endpoints[0]["url"] != url:
            api.catalog_api.update_endpoint(endpoints[0]["id"], {"url": url})
    else:
        eid = state["ids"]["endpoint_swift"]
        api.catalog_api.create_endpoint(eid, {
            "id": eid, "service_id": swift["id"], "interface": "public",
            "region_id": state["region"], "url": url, "enabled": True})

    app = state["application_credential"]
    try:
        api.application_credential_api.get_application_credential(app["id"])
    except exception.ApplicationCredentialNotFound:
        api.application_credential_api.create_application_credential({
            "id": app["id"], "name": app["name"], "user_id": owner["id"],
            "project_id": cloudfs["id"], "secret": app["secret"],
            "roles": [{"id": roles["member"]["id"], "name": "member"}],
            "unrestricted": False, "expires_at": None, "description": "cloudfs dev"})


def serve(etc: Path) -> None:
    state = json.loads((etc / "keystone.json").read_text())
    os.environ["OS_KEYSTONE_CONFIG_DIR"] = str(etc)
    sys.argv = sys.argv[:1]  # keystone parses sys.argv with oslo.config
    warnings.simplefilter("ignore")  # eventlet's deprecation banner
    import keystone.cmd.cli  # noqa: F401 - imported once, shared by the set-up child

    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            setup(etc, state)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    if status != 0:
        sys.exit(f"keystone set-up failed (status {status})")
    print("keystone set up", flush=True)

    import keystone.conf
    from keystone.server import wsgi
    from werkzeug import serving

    keystone.conf.CONF.clear()
    app = wsgi.initialize_public_application()
    context = None
    if state.get("tls"):
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(state["tls"]["cert"], state["tls"]["key"])
    serving.run_simple("127.0.0.1", state["port"], app, threaded=True, ssl_context=context,
                       use_reloader=False, use_debugger=False)


def main(argv: list[str]) -> None:
    if len(argv) == 2 and argv[0] == "serve":
        serve(Path(argv[1]).parent)
    else:
        sys.exit(f"usage: {__doc__}")


if __name__ == "__main__":
    main(sys.argv[1:])
