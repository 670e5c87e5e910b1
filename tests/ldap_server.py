"""A real LDAP server for the tests: Debian's slapd on a free loopback port, with a generated config, a few
users and groups, a read-only service account, and entries hidden from anonymous searches."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from tests.servers import free_port, wait_for_port

SUFFIX = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "root-secret"
READER_DN = f"cn=reader,{SUFFIX}"
READER_PASSWORD = "reader-pass"
ENTRIES = f"""dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
dc: example
o: Example

dn: {READER_DN}
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: reader
userPassword: {READER_PASSWORD}

dn: ou=people,{SUFFIX}
objectClass: organizationalUnit
ou: people

dn: ou=groups,{SUFFIX}
objectClass: organizationalUnit
ou: groups

dn: uid=alice,ou=people,{SUFFIX}
objectClass: inetOrgPerson
uid: alice
cn: Alice Liddell
sn: Liddell
mail: alice@example.org
userPassword: alice-pass

dn: uid=bob,ou=people,{SUFFIX}
objectClass: inetOrgPerson
uid: bob
cn: Bob
sn: Builder
userPassword: bob-pass

dn: cn=researchers,ou=groups,{SUFFIX}
objectClass: groupOfNames
cn: researchers
member: uid=alice,ou=people,{SUFFIX}
"""


class LdapServer:
    def __init__(self, directory: Path) -> None:
        binary = shutil.which("slapd") or "/usr/sbin/slapd"
        if not Path(binary).exists():
            raise RuntimeError("slapd is not installed; run `make deps` (apt-get install slapd ldap-utils)")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        (self.directory / "data").mkdir(parents=True, exist_ok=True)
        schemas = "\n".join(f"include /etc/ldap/schema/{name}.schema" for name in ("core", "cosine", "inetorgperson"))
        (self.directory / "slapd.conf").write_text(f"""{schemas}
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {self.directory}/slapd.pid
database mdb
maxsize 10485760
suffix "{SUFFIX}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PASSWORD}
directory {self.directory}/data
# Hardened as Active Directory is by default: anonymous clients may bind and see nothing else.
access to attrs=userPassword
    by self write
    by anonymous auth
    by * none
access to *
    by users read
    by * none
""")
        self.process = subprocess.Popen([self.binary, "-f", str(self.directory / "slapd.conf"), "-h", self.url,
                                         "-d", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)
        (self.directory / "entries.ldif").write_text(ENTRIES)
        for _ in range(20):
            added = subprocess.run(["ldapadd", "-x", "-H", self.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD, "-f",
                                    str(self.directory / "entries.ldif")], capture_output=True, text=True)
            if added.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(added.stderr)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
