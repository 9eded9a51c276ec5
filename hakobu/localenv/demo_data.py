"""Demo source data: a fitness-club SaaS with schema-per-tenant and shared-table tenants.

Deterministic (seeded) so two demo runs print the same figures. Written through pymysql with
utf8mb4 (names carry kanji and emoji) and, per schema, the session time zone the cluster declares
for its DATETIME values.
"""

import datetime as dt
import json
import random
from dataclasses import dataclass

import pymysql

from hakobu.sqlquote import quote_ident


@dataclass(frozen=True)
class DemoSchema:
    schema: str
    tz_offset: str                 # session time zone for writes, e.g. '+09:00'
    tenant_ids: tuple[int, ...] = ()   # shared tables: discriminator values; () = per-tenant schema
    scale: float = 1.0


DEMO_SCHEMAS = (
    DemoSchema("hakobu_demo_alpha", "+09:00", scale=1.0),
    DemoSchema("hakobu_demo_beta", "+09:00", scale=0.4),
    DemoSchema("hakobu_demo_shared", "+00:00", tenant_ids=(3, 4, 5), scale=0.5),
)

BASE_COUNTS = {"members": 3000, "lessons": 400, "reservations": 20000, "payments": 9000,
               "checkins": 30000}
FIRST = ["Haruto", "Yui", "Sota", "Hina", "Aoi", "Ren", "Mei", "Yuto", "Emma", "Liam", "Olivia",
         "Noah", "さくら", "翔太", "美咲", "José", "Zoë"]
LAST = ["Sato", "Suzuki", "Takahashi", "Tanaka", "Ito", "Smith", "García", "Müller", "山田",
        "中村", "O'Brien"]
LESSONS = ["Morning Yoga", "HIIT 30", "Spin Class", "Pilates", "Bouldering Basics",
           "Kettlebell", "Zumba 💃", "Stretch & Relax", "Boxing", "Aqua Fit"]


def _ddl(schema: str, shared: bool) -> list[str]:
    s = quote_ident(schema)
    tcol = "tenant_id INT NOT NULL, " if shared else ""
    cur_idx = "INDEX ix_cursor (tenant_id, updated_at)" if shared else "INDEX ix_cursor (updated_at)"
    upd = ("updated_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) "
           "ON UPDATE CURRENT_TIMESTAMP(6)")
    pk_plans = "PRIMARY KEY (tenant_id, id)" if shared else "PRIMARY KEY (id)"
    return [
        f"DROP DATABASE IF EXISTS {s}",
        f"CREATE DATABASE {s} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
        f"CREATE TABLE {s}.plans ({tcol}id INT NOT NULL, name VARCHAR(64) NOT NULL, "
        f"monthly_fee DECIMAL(10,2) NOT NULL, {pk_plans})",
        f"CREATE TABLE {s}.members (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, {tcol}"
        "email VARCHAR(255) NOT NULL, full_name VARCHAR(128) NOT NULL, phone VARCHAR(32), "
        "password_hash CHAR(60) NOT NULL, plan_id INT, birthday DATE NULL, "
        "status ENUM('active','paused','left') NOT NULL DEFAULT 'active', "
        f"joined_at DATETIME NOT NULL, {upd}, {cur_idx})",
        f"CREATE TABLE {s}.lessons (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, {tcol}"
        "title VARCHAR(128) NOT NULL, instructor VARCHAR(128), starts_at DATETIME NOT NULL, "
        f"capacity SMALLINT UNSIGNED NOT NULL, room VARCHAR(32), {upd}, {cur_idx})",
        f"CREATE TABLE {s}.reservations (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, {tcol}"
        "member_id BIGINT NOT NULL, lesson_id BIGINT NOT NULL, "
        "status ENUM('booked','attended','cancelled','no_show') NOT NULL, "
        f"reserved_at DATETIME(6) NOT NULL, {upd}, {cur_idx})",
        f"CREATE TABLE {s}.payments (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, {tcol}"
        "member_id BIGINT NOT NULL, amount DECIMAL(10,2) NOT NULL, currency CHAR(3) NOT NULL, "
        f"method VARCHAR(16) NOT NULL, paid_at DATETIME NOT NULL, {upd}, {cur_idx})",
        f"CREATE TABLE {s}.checkins (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, {tcol}"
        "member_id BIGINT NOT NULL, checked_in_at DATETIME NOT NULL, device JSON, "
        f"{upd}, {cur_idx})",
    ]


def connect(host: str, port: int, user: str, password: str = "", tz: str = "+00:00"):
    return pymysql.connect(host=host, port=port, user=user, password=password,
                           charset="utf8mb4", autocommit=False,
                           init_command=f"SET time_zone = '{tz}'")


def create_demo_data(host: str, port: int, user: str = "root", password: str = "",
                     schemas=DEMO_SCHEMAS, seed: int = 7) -> dict[str, int]:
    """(Re)create the demo schemas; returns rows written per schema.table."""
    written: dict[str, int] = {}
    for ds in schemas:
        rng = random.Random(f"{seed}:{ds.schema}")
        conn = connect(host, port, user, password, ds.tz_offset)
        try:
            with conn.cursor() as cur:
                for stmt in _ddl(ds.schema, bool(ds.tenant_ids)):
                    cur.execute(stmt)
                for tid in ds.tenant_ids or (None,):
                    for table, rows in _rows(rng, ds.scale, tid).items():
                        _insert(cur, ds.schema, table, rows)
                        key = f"{ds.schema}.{table}"
                        written[key] = written.get(key, 0) + len(rows)
            conn.commit()
        finally:
            conn.close()
    return written


def _insert(cur, schema: str, table: str, rows: list[dict]) -> None:
    if not rows:
        return
    cols = list(rows[0])
    sql = (f"INSERT INTO {quote_ident(schema)}.{quote_ident(table)} "
           f"({', '.join(quote_ident(c) for c in cols)}) VALUES ({', '.join(['%s'] * len(cols))})")
    for i in range(0, len(rows), 2000):
        cur.executemany(sql, [tuple(r[c] for c in cols) for r in rows[i:i + 2000]])


def _rows(rng: random.Random, scale: float, tenant_id: int | None) -> dict[str, list[dict]]:
    now = dt.datetime(2026, 11, 1, 12, 0, 0)
    n = {k: max(10, int(v * scale)) for k, v in BASE_COUNTS.items()}
    extra = {"tenant_id": tenant_id} if tenant_id is not None else {}
    prefix = f"t{tenant_id}-" if tenant_id is not None else ""

    def ts(days_back: int = 120) -> dt.datetime:
        return now - dt.timedelta(seconds=rng.randrange(days_back * 86400),
                                  microseconds=rng.randrange(1_000_000))

    plans = [{**extra, "id": i, "name": name, "monthly_fee": fee} for i, (name, fee) in
             enumerate([("Basic", "6980.00"), ("Premium", "12800.00"), ("Student", "4980.50"),
                        ("Off-peak", "5500.00")], start=1)]
    members = []
    for i in range(n["members"]):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        updated = ts()
        members.append({**extra, "email": f"{prefix}member{i}@example.com",
                        "full_name": f"{first} {last}" + (" 🏋️" if i % 97 == 0 else ""),
                        "phone": f"+81-90-{rng.randrange(10**8):08d}" if i % 5 else None,
                        "password_hash": "$2b$12$" + "".join(rng.choice("abcdefXYZ0123456789./")
                                                             for _ in range(53)),
                        "plan_id": rng.randrange(1, 5),
                        "birthday": dt.date(1960 + rng.randrange(45), rng.randrange(1, 13),
                                            rng.randrange(1, 29)) if i % 7 else None,
                        "status": rng.choice(["active"] * 8 + ["paused", "left"]),
                        "joined_at": updated - dt.timedelta(days=rng.randrange(900)),
                        "updated_at": updated})
    lessons = [{**extra, "title": rng.choice(LESSONS), "instructor": rng.choice(FIRST),
                "starts_at": ts(60).replace(minute=0, second=0, microsecond=0),
                "capacity": rng.choice([8, 12, 20, 30]), "room": f"Studio {rng.randrange(1, 4)}",
                "updated_at": ts(60)} for _ in range(n["lessons"])]
    reservations = [{**extra, "member_id": rng.randrange(1, n["members"] + 1),
                     "lesson_id": rng.randrange(1, n["lessons"] + 1),
                     "status": rng.choice(["booked", "attended", "attended", "cancelled",
                                           "no_show"]),
                     "reserved_at": ts(60), "updated_at": ts(60)}
                    for _ in range(n["reservations"])]
    payments = [{**extra, "member_id": rng.randrange(1, n["members"] + 1),
                 "amount": f"{rng.choice([4980.5, 5500, 6980, 12800, 330, 1100.25]):.2f}",
                 "currency": "JPY", "method": rng.choice(["card", "bank", "cash", "paypay"]),
                 "paid_at": ts(), "updated_at": ts()} for _ in range(n["payments"])]
    checkins = [{**extra, "member_id": rng.randrange(1, n["members"] + 1),
                 "checked_in_at": ts(30).replace(microsecond=0),
                 "device": json.dumps({"gate": rng.randrange(1, 5),
                                       "kind": rng.choice(["qr", "nfc", "staff"]),
                                       "app": {"os": rng.choice(["ios", "android"]),
                                               "ver": f"3.{rng.randrange(10)}"}},
                                      ensure_ascii=False) if rng.random() > 0.05 else None,
                 "updated_at": ts(30)} for _ in range(n["checkins"])]
    return {"plans": plans, "members": members, "lessons": lessons,
            "reservations": reservations, "payments": payments, "checkins": checkins}


def mutate_demo_data(host: str, port: int, user: str = "root", password: str = "",
                     schemas=DEMO_SCHEMAS, seed: int = 11) -> dict[str, int]:
    """Day-two changes: update some rows (their updated_at moves to now) and insert new ones.
    Returns the number of rows changed per schema.table (updates + inserts)."""
    changed: dict[str, int] = {}
    for ds in schemas:
        rng = random.Random(f"{seed}:{ds.schema}")
        conn = connect(host, port, user, password, ds.tz_offset)
        s = quote_ident(ds.schema)
        try:
            with conn.cursor() as cur:
                for tid in ds.tenant_ids or (None,):
                    where = f" AND tenant_id = {int(tid)}" if tid is not None else ""
                    tvals = {"tenant_id": tid} if tid is not None else {}
                    cur.execute(f"UPDATE {s}.members SET status = 'paused' "
                                f"WHERE id % 50 = 3{where}")
                    changed[f"{ds.schema}.members"] = (changed.get(f"{ds.schema}.members", 0)
                                                       + cur.rowcount)
                    cur.execute(f"UPDATE {s}.reservations SET status = 'attended' "
                                f"WHERE status = 'booked' AND id % 40 = 1{where}")
                    changed[f"{ds.schema}.reservations"] = (
                        changed.get(f"{ds.schema}.reservations", 0) + cur.rowcount)
                    cur.execute(f"SELECT COALESCE(MAX(id), 0) FROM {s}.members WHERE 1=1{where}")
                    new_payments = [{**tvals, "member_id": rng.randrange(1, 100),
                                     "amount": "6980.00", "currency": "JPY", "method": "card",
                                     "paid_at": dt.datetime(2026, 11, 2, 10, 0)}
                                    for _ in range(25)]
                    _insert(cur, ds.schema, "payments", new_payments)
                    changed[f"{ds.schema}.payments"] = (changed.get(f"{ds.schema}.payments", 0)
                                                        + len(new_payments))
                    new_checkins = [{**tvals, "member_id": rng.randrange(1, 100),
                                     "checked_in_at": dt.datetime(2026, 11, 2, 7, rng.randrange(60)),
                                     "device": json.dumps({"gate": 1, "kind": "qr"})}
                                    for _ in range(40)]
                    _insert(cur, ds.schema, "checkins", new_checkins)
                    changed[f"{ds.schema}.checkins"] = (changed.get(f"{ds.schema}.checkins", 0)
                                                        + len(new_checkins))
            conn.commit()
        finally:
            conn.close()
    return changed
