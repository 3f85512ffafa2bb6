"""Slow down password guessing: failed logins counted in the database.

Every process and thread of the blog counts in the same login_failure table.
Within LOGIN_WINDOW, an account name may fail MAX_FAILURES_PER_NAME times and an
address MAX_FAILURES_PER_ADDRESS times; further tries get 429 Too Many Requests
with Retry-After, until the oldest failure leaves the window. A successful
login clears its name's failures.

A browser that has logged in to an account before holds a device cookie for
it (OWASP's "Slow Down Online Guessing Attacks with Device Cookies"): its
attempts count against that browser, not the name, so that guesses from
anywhere else can never keep the account's owner out.

A try is refused at once, writing nothing, if the failures already there
reach the limit. Otherwise it is committed as a failure before it is counted
again, and that count holds every failure committed by then, its own and any
that came in meanwhile. So tries at the same moment, in any process, can never
let more than the limit through; at worst a few more of them are refused.
"""

import math
import secrets
from datetime import datetime, timedelta
from typing import NamedTuple

from flask import Response, current_app, request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.orm import InstrumentedAttribute
from werkzeug.exceptions import TooManyRequests

from .db import get_db, reading
from .models import LoginFailure, User, utcnow
from .sessions import cookie_name, cookie_secure, password_mark

MAX_FAILURES_PER_NAME = 5
MAX_FAILURES_PER_ADDRESS = 20
LOGIN_WINDOW = timedelta(minutes=15)
DEVICE_COOKIE = "device"
DEVICE_LIFETIME_SECONDS = 365 * 24 * 3600
MAX_DEVICE_ACCOUNTS = 5  # accounts one browser is known for
DEVICE_KEY = "device "  # what a known browser's failures count under, before its token


def failures_within_window(column: InstrumentedAttribute[str]) -> tuple:
    """The statements that clear out, and count, a name's or an address's failures."""
    mine = column == bindparam("value")
    clear_out = delete(LoginFailure).where(mine, LoginFailure.created <= bindparam("since"))
    count = select(func.count(), func.min(LoginFailure.created)).where(
        mine, LoginFailure.created > bindparam("since")
    )
    return clear_out, count


BY_NAME = failures_within_window(LoginFailure.username_key)
FROM_ADDRESS = failures_within_window(LoginFailure.address)


class Attempt(NamedTuple):
    row: LoginFailure  # the attempt, as a failure until cleared
    failures_left: int  # how many more the name or address may fail before 429
    limited: str  # which limit failures_left is of: "address", "name" or "device"


def record_attempt(username_key: str | None) -> Attempt:
    """Write this login attempt down as a failure, or refuse it with 429.

    username_key is the name in lower case, or "" for one that no account can
    have (failures then count against the address alone, in effect); None
    counts against the address alone (a registration).
    """
    now = utcnow()
    since = now - LOGIN_WINDOW
    # The longest IPv6 address in text fits; a zone index ("%eth0") may not.
    attempt = LoginFailure(
        username_key=username_key or "", address=(request.remote_addr or "")[:45], created=now
    )
    checks = [(FROM_ADDRESS, attempt.address, MAX_FAILURES_PER_ADDRESS, "address")]
    if username_key is not None:
        kind = "device" if attempt.username_key.startswith(DEVICE_KEY) else "name"
        checks.append((BY_NAME, attempt.username_key, MAX_FAILURES_PER_NAME, kind))
    # Counted first on a read that takes no write lock: a flood of tries
    # already over the limit writes nothing, and empties no page cache.
    with reading() as connection:
        for (_, count), value, limit, _ in checks:
            failures, oldest = connection.execute(count, {"value": value, "since": since}).one()
            if failures >= limit:
                raise too_many_tries(oldest, now)
    db = get_db()
    for (clear_out, _), value, _, _ in checks:
        db.execute(clear_out, {"value": value, "since": since})
    db.add(attempt)
    db.commit()
    failures_left, limited = MAX_FAILURES_PER_ADDRESS, "address"
    for (_, count), value, limit, kind in checks:
        failures, oldest = db.execute(count, {"value": value, "since": since}).one()
        if limit - failures < failures_left:
            failures_left, limited = limit - failures, kind
        if failures > limit:  # tries at the same moment: this one came last
            db.delete(attempt)  # a refused try is not a guess
            db.commit()
            raise too_many_tries(oldest, now)
    db.commit()
    return Attempt(attempt, failures_left, limited)


def last_try_warning(attempt: Attempt, username: str) -> str | None:
    """What one more failure will do, when it is the last one the limit allows."""
    if attempt.failures_left != 1:
        return None
    minutes = LOGIN_WINDOW.seconds // 60
    if attempt.limited == "address":
        return (
            f"One more failed login and every login from this address will be refused "
            f"for up to {minutes} minutes."
        )
    if attempt.limited == "device":
        return (
            f"One more wrong password and this browser's logins to {username} will be "
            f"refused for up to {minutes} minutes."
        )
    return (
        f"One more wrong password and logins to {username} will be refused for up to "
        f"{minutes} minutes, except from browsers that have logged in to it before."
    )


def too_many_tries(oldest: datetime, now: datetime) -> TooManyRequests:
    wait = seconds_until(oldest + LOGIN_WINDOW, now)
    minutes = math.ceil(wait / 60)
    return TooManyRequests(
        f"Too many tries. Wait {minutes} minute{'s' if minutes > 1 else ''}, then try again.",
        retry_after=wait,
    )


def clear_failures(username_key: str, attempt: Attempt) -> None:
    """The password was right: forget the name's failures and this attempt's
    (a device's); the caller commits."""
    keys = {username_key, attempt.row.username_key}
    get_db().execute(delete(LoginFailure).where(LoginFailure.username_key.in_(keys)))


def device_signer() -> URLSafeTimedSerializer:
    key = current_app.secret_key
    assert key is not None  # create_app always sets one
    return URLSafeTimedSerializer(key, salt="device cookie")


def known_devices() -> dict[str, list[str]]:
    """The accounts this browser has logged in to, each with its device's token
    and a mark of the password it logged in with."""
    try:
        devices = device_signer().loads(
            request.cookies.get(cookie_name(DEVICE_COOKIE), ""), max_age=DEVICE_LIFETIME_SECONDS
        )
    except BadSignature:
        return {}
    return devices if isinstance(devices, dict) else {}


PASSWORD_HASH_OF_NAME = select(User.password_hash).where(
    User.username_key == bindparam("username_key")
)


def device_mark(password_hash: str) -> str:
    return password_mark(password_hash)[:16]


def throttle_key(username_key: str) -> str:
    """What this attempt's failures count against: this browser's own, if it has
    logged in to the account since its password was last set, else the name's."""
    device = known_devices().get(username_key)
    if not (isinstance(device, list) and len(device) == 2):
        return username_key  # none, or from before devices were marked
    token, mark = device
    with reading() as connection:
        password_hash = connection.scalar(PASSWORD_HASH_OF_NAME, {"username_key": username_key})
    if password_hash is None or mark != device_mark(password_hash):
        return username_key  # a new password ends every browser's standing
    return DEVICE_KEY + token


def remember_device(response: Response, username_key: str, password_hash: str) -> None:
    """After a login or a new password: this browser is known for the account
    from now on, until its password changes."""
    devices = known_devices()
    device = devices.pop(username_key, None)
    token = device[0] if isinstance(device, list) and device else secrets.token_hex(16)
    devices[username_key] = [token, device_mark(password_hash)]
    devices = dict(list(devices.items())[-MAX_DEVICE_ACCOUNTS:])
    response.set_cookie(
        cookie_name(DEVICE_COOKIE),
        device_signer().dumps(devices),
        max_age=DEVICE_LIFETIME_SECONDS,
        httponly=True,
        samesite="Lax",
        secure=cookie_secure(current_app),
    )


def seconds_until(when: datetime, now: datetime) -> int:
    return max(1, math.ceil((when - now).total_seconds()))
