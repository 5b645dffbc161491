"""Logging in to Swift: tempauth v1 or Keystone v3, and the TLS settings of every request.

What it owns: the credentials (`SwiftAuth` for tempauth v1, `KeystoneAuth` for Keystone v3 with
a password or an application credential), the certificate policy (`Tls`), and `Login`, the
thread-safe object that hands every request of the store a storage URL and a token that is
still valid, builds the swiftclient Connections and the `ssl.SSLContext` of the store's own
http.client streams, and forgets a token that Swift refused (401).

Keystone goes through a keystoneauth1 `Session` shared by every Connection (swiftclient's
`session=`): keystoneauth renews a token 120 s before it expires (`MIN_TOKEN_LIFE_SECONDS`),
honours the CA file for the Keystone call too, and re-authenticates application credentials,
which swiftclient's own Keystone code does neither of. Every call here may block on the network
(a new token): call it from a worker thread.

Secrets are `repr=False` and never part of a message: errors name the URL, the user and the
project, never a password, key or secret.
"""

from __future__ import annotations

import logging
import ssl
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any

import swiftclient
import urllib3.exceptions
from keystoneauth1 import exceptions as ksa_exc
from keystoneauth1 import session as ksa_session
from keystoneauth1.identity import v3

from seqwrite.errors import AuthFailed, CertificateError, StoreError

log = logging.getLogger(__name__)
# keystoneauth logs requests at DEBUG (bodies with credentials): never let them out.
logging.getLogger("keystoneauth").setLevel(logging.WARNING)

INTERFACES = ("public", "internal", "admin")


@dataclass(frozen=True, slots=True)
class Tls:
    """Certificate verification: against the system store (default), against the CA file
    `cacert`, or none at all (`insecure`, which must be asked for explicitly)."""

    cacert: str = ""
    insecure: bool = False

    def context(self) -> ssl.SSLContext:
        """The context of the store's own https:// connections. ValueError if `cacert`
        cannot be loaded."""
        if self.insecure:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        try:
            return ssl.create_default_context(cafile=self.cacert or None)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cacert {self.cacert}: cannot load it as a PEM CA "
                             f"certificate ({exc.strerror or exc})") from None

    @property
    def verify(self) -> bool | str:
        """What requests/keystoneauth take as `verify=`."""
        return False if self.insecure else (self.cacert or True)


@dataclass(frozen=True, slots=True)
class SwiftAuth:
    """tempauth v1 credentials (the swift CLI's ST_AUTH/ST_USER/ST_KEY)."""

    auth_url: str
    user: str
    key: str = field(repr=False)
    storage_url: str = ""  # overrides the storage URL that the auth answer names
    tls: Tls = Tls()

    def describe(self) -> str:
        return f"{self.auth_url} (tempauth, user {self.user})"


@dataclass(frozen=True, slots=True)
class KeystoneAuth:
    """Keystone v3 credentials: a password (user name or id; project name or id; domains by
    name or id) or an application credential (id, or name + user, and its secret)."""

    auth_url: str
    username: str = ""
    user_id: str = ""
    password: str = field(default="", repr=False)
    user_domain_name: str = ""
    user_domain_id: str = ""
    project_name: str = ""
    project_id: str = ""
    project_domain_name: str = ""
    project_domain_id: str = ""
    application_credential_id: str = ""
    application_credential_name: str = ""
    application_credential_secret: str = field(default="", repr=False)
    region_name: str = ""
    interface: str = "public"
    storage_url: str = ""  # overrides the catalog's object-store endpoint
    tls: Tls = Tls()

    @property
    def uses_application_credential(self) -> bool:
        return bool(self.application_credential_id or self.application_credential_name)

    def problem(self) -> str | None:
        """What is missing or contradictory, as the name of the setting; None if usable."""
        if self.interface not in INTERFACES:
            return f"interface must be one of {', '.join(INTERFACES)}, not {self.interface!r}"
        if self.uses_application_credential:
            if not self.application_credential_secret:
                return "application_credential_secret is missing"
            if not self.application_credential_id and not (self.username or self.user_id):
                return "an application_credential_name needs user (or user_id)"
            return None
        if not (self.username or self.user_id):
            return "user (or user_id) is missing"
        if not self.password:
            return "password is missing"
        if not (self.project_name or self.project_id):
            return "project_name (or project_id) is missing"
        if self.username and not (self.user_domain_name or self.user_domain_id):
            return "a user name needs user_domain_name (or user_domain_id)"
        if self.project_name and not (self.project_domain_name or self.project_domain_id):
            return "a project name needs project_domain_name (or project_domain_id)"
        return None

    def describe(self) -> str:
        cred = self.application_credential_id or self.application_credential_name
        who = (f"application credential {cred}" if self.uses_application_credential else
               f"user {self.username or self.user_id}, project "
               f"{self.project_name or self.project_id}")
        return f"{self.auth_url} (Keystone v3, {who})"

    def plugin(self) -> v3.Auth:
        def opt(**kw: str) -> dict[str, Any]:
            return {k: v for k, v in kw.items() if v}

        if self.uses_application_credential:
            return v3.ApplicationCredential(
                auth_url=self.auth_url,
                application_credential_secret=self.application_credential_secret,
                **opt(application_credential_id=self.application_credential_id,
                      application_credential_name=self.application_credential_name,
                      username=self.username, user_id=self.user_id,
                      user_domain_name=self.user_domain_name,
                      user_domain_id=self.user_domain_id))
        return v3.Password(
            auth_url=self.auth_url, password=self.password,
            **opt(username=self.username, user_id=self.user_id,
                  user_domain_name=self.user_domain_name, user_domain_id=self.user_domain_id,
                  project_name=self.project_name, project_id=self.project_id,
                  project_domain_name=self.project_domain_name,
                  project_domain_id=self.project_domain_id))


Auth = SwiftAuth | KeystoneAuth


def is_certificate_error(exc: BaseException) -> bool:
    """True if `exc` (or what caused it) is a failed certificate verification: retrying
    cannot fix it."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ssl.SSLCertVerificationError | CertificateError):
            return True
        if "CERTIFICATE_VERIFY_FAILED" in str(e) or "certificate verify failed" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def certificate_error(url: str, tls: Tls) -> CertificateError:
    trust = f"the CA in {tls.cacert}" if tls.cacert else "the system's CA certificates"
    return CertificateError(f"TLS certificate of {url} is not trusted by {trust} "
                            "(certificate verify failed): set cacert (OS_CACERT) to the CA "
                            "that signed it")


class Login:
    """Storage URL, tokens and connections for one account; safe to share between threads.

    Attributes:
        auth: the credentials.
        timeout: seconds for one request (authentication included).
        ssl_context: for the store's own https:// connections.
        authentications: how many tokens were obtained (the first one included).
    """

    def __init__(self, auth: Auth, timeout: float) -> None:
        self.auth = auth
        self.timeout = timeout
        self.ssl_context = auth.tls.context()
        self.authentications = 0
        self._lock = threading.Lock()
        self._url: str | None = None
        self._token: str | None = None
        self._session: ksa_session.Session | None = None
        if auth.tls.insecure:
            warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
        if isinstance(auth, KeystoneAuth):
            if (problem := auth.problem()) is not None:
                raise ValueError(problem)
            self._session = ksa_session.Session(auth=auth.plugin(), verify=auth.tls.verify,
                                                timeout=timeout)

    @property
    def storage_url(self) -> str | None:
        """The storage URL of the last authentication (None before the first)."""
        return self._url

    # -- tokens --------------------------------------------------------------------------

    def current(self) -> tuple[str, str]:
        """(storage URL, token), authenticating if there is no token or (Keystone) it expires
        within 2 minutes. Raises AuthFailed, CertificateError, or ConnectionError (transient:
        the auth service is unreachable or failing)."""
        try:
            if self._session is not None:
                return self._keystone_current()
            with self._lock:
                if self._url is None or self._token is None:
                    self._adopt(*self._v1_get_auth())
                assert self._url is not None and self._token is not None
                return self._url, self._token
        except StoreError:
            raise
        except Exception as exc:
            raise self.translate(exc) from exc

    def _v1_get_auth(self) -> tuple[str, str]:
        assert isinstance(self.auth, SwiftAuth)
        url, token = swiftclient.get_auth(
            self.auth.auth_url, self.auth.user, self.auth.key, auth_version="1",
            cacert=self.auth.tls.cacert or None, insecure=self.auth.tls.insecure,
            timeout=self.timeout)
        return self.auth.storage_url or url, token

    def _keystone_current(self) -> tuple[str, str]:
        assert self._session is not None and isinstance(self.auth, KeystoneAuth)
        token = self._session.get_token()
        if token is None:
            raise AuthFailed(f"Keystone at {self.auth.auth_url} gave no token")
        url = self.auth.storage_url or self._url
        if url is None:
            url = self._session.get_endpoint(service_type="object-store",
                                             interface=self.auth.interface,
                                             region_name=self.auth.region_name or None)
            if not url:
                raise ksa_exc.EndpointNotFound()
        with self._lock:
            self._adopt(url, token)
        return url, token

    def _adopt(self, url: str, token: str) -> None:
        """Under the lock: remember (url, token), counting a new token."""
        if token != self._token:
            self.authentications += 1
        self._url, self._token = url, token

    def expired(self, token: str) -> None:
        """Swift refused `token` (401): the next `current()` gets a new one."""
        with self._lock:
            if self._token != token:
                return  # another request already replaced it
            self._token = None
        if self._session is not None:
            self._session.invalidate()

    # -- swiftclient -----------------------------------------------------------------------

    def connection(self) -> swiftclient.Connection:
        """A new swiftclient Connection (no retries of its own; one re-authentication after a
        401 is swiftclient's, through the shared session for Keystone)."""
        tls = self.auth.tls
        common: dict[str, Any] = {"retries": 0, "timeout": self.timeout,
                                  "cacert": tls.cacert or None, "insecure": tls.insecure,
                                  "preauthurl": self._url, "preauthtoken": self._token}
        if isinstance(self.auth, SwiftAuth):
            return swiftclient.Connection(authurl=self.auth.auth_url, user=self.auth.user,
                                          key=self.auth.key, auth_version="1", **common)
        opts = {"endpoint_type": self.auth.interface, "region_name": self.auth.region_name,
                "object_storage_url": self.auth.storage_url}
        return swiftclient.Connection(session=self._session,
                                      os_options={k: v for k, v in opts.items() if v},
                                      **common)

    def refresh(self, conn: swiftclient.Connection) -> None:
        """Before a request on `conn`: give it the current token (renewed if close to
        expiry)."""
        url, token = self.current()
        if conn.token != token:
            conn.url, conn.token = url, token

    def adopt(self, conn: swiftclient.Connection) -> None:
        """After a request on `conn`: keep the token it got by re-authenticating itself."""
        if conn.url and conn.token:
            with self._lock:
                self._adopt(conn.url, conn.token)

    # -- errors ----------------------------------------------------------------------------

    def translate(self, exc: BaseException) -> BaseException:
        """A keystoneauth/requests failure of authentication as one of ours: AuthFailed or
        CertificateError (permanent), ConnectionError (transient); others unchanged."""
        where = self.auth.auth_url
        if is_certificate_error(exc):
            return certificate_error(where, self.auth.tls)
        if isinstance(exc, ksa_exc.EndpointNotFound | ksa_exc.EmptyCatalog):
            assert isinstance(self.auth, KeystoneAuth)
            region = f", region {self.auth.region_name}" if self.auth.region_name else ""
            return AuthFailed(f"Keystone at {where}: no object-store endpoint in the catalog "
                              f"(interface {self.auth.interface}{region})")
        if isinstance(exc, ksa_exc.ConnectionError | ksa_exc.RequestTimeout
                      | ksa_exc.ServiceUnavailable | ksa_exc.InternalServerError
                      | ksa_exc.BadGateway | ksa_exc.GatewayTimeout):
            return ConnectionError(f"authentication at {where}: {_reason(exc)}")
        if isinstance(exc, ksa_exc.ClientException):
            return AuthFailed(f"authentication at {self.auth.describe()} failed: "
                              f"{_first_line(exc)}")
        return exc


def _reason(exc: BaseException) -> str:
    """The root cause of a connection failure in a few words ("Connection refused"), found
    down the chain of wrapped exceptions (keystoneauth, requests, urllib3, the socket)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.strerror:
            return e.strerror
        if isinstance(e, TimeoutError):
            return "timed out"
        todo += [e.__cause__, e.__context__, getattr(e, "reason", None),
                 *(a for a in e.args if isinstance(a, BaseException))]
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:300]
