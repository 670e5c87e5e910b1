"""Reading ``modelport user import``'s CSV file into checked rows, with errors naming the line."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from modelport.db.provisioning import NewUser
from modelport.protocol.errors import InvalidRequest

MAX_BYTES = 10 * 1024 * 1024
MAX_ROWS = 20_000
MAX_GROUPS_PER_USER = 64
COLUMNS = {"name", "display_name", "email", "admin", "groups", "password"}
TRUE, FALSE = {"1", "true", "yes", "y"}, {"", "0", "false", "no", "n"}


def read_users(path: str) -> list[NewUser]:
    """The users a CSV file lists (a header row first; ``name`` required)."""
    file = Path(path)
    try:
        if file.stat().st_size > MAX_BYTES:
            raise InvalidRequest(f"{path} is larger than {MAX_BYTES // 1024 // 1024} MiB.")
        text = file.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise InvalidRequest(f"cannot read {path}: {exc.strerror}.") from None
    except UnicodeDecodeError:
        raise InvalidRequest(f"{path} is not UTF-8 text.") from None
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    header = set(reader.fieldnames or ())
    if "name" not in header or not header <= COLUMNS:
        raise InvalidRequest(f"{path}: the first line names the columns: name, and optionally "
                             f"{', '.join(sorted(COLUMNS - {'name'}))} (found: {', '.join(reader.fieldnames or ())}).")
    rows: list[NewUser] = []
    try:
        for record in reader:
            if len(rows) >= MAX_ROWS:
                raise InvalidRequest(f"{path} lists more than {MAX_ROWS} users; split it.")
            rows.append(_row(reader.line_num, record))
    except csv.Error as exc:
        raise InvalidRequest(f"{path}, line {reader.line_num}: {exc}.") from None
    return rows


def _row(line: int, record: dict[str | None, str | list[str] | None]) -> NewUser:
    if None in record:
        raise InvalidRequest(f"line {line} has more fields than the header.")
    values = {key: (value or "").strip() for key, value in record.items() if isinstance(key, str)
              and not isinstance(value, list)}
    admin = values.get("admin", "").lower()
    if admin not in TRUE | FALSE:
        raise InvalidRequest(f"line {line}: admin is true or false, not '{values['admin']}'.")
    groups = tuple(group.strip() for group in values.get("groups", "").split(";") if group.strip())
    if len(groups) > MAX_GROUPS_PER_USER:
        raise InvalidRequest(f"line {line}: at most {MAX_GROUPS_PER_USER} groups per user.")
    if len(values.get("display_name", "")) > 256 or len(values.get("email", "")) > 256:
        raise InvalidRequest(f"line {line}: a display name or email has at most 256 characters.")
    return NewUser(line=line, name=values["name"], display_name=values.get("display_name", ""),
                   email=values.get("email") or None, admin=admin in TRUE, groups=tuple(dict.fromkeys(groups)),
                   password=values.get("password") or None)
