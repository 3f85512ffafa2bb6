"""Slow down password guessing: failed logins counted in the database.

Every process and thread of the blog counts in the same login_failure table.
Within LOGIN_WINDOW, an account name may fail MAX_FAILURES_PER_NAME times and an
address MAX_FAILURES_PER_ADDRESS times; further tries get 429 Too Many Requests
with Retry-After, until the oldest failure leaves the window. A successful
login clears its name's failures.

An attempt is committed as a failure before it is counted, and it counts
every failure committed by then, its own and any that came in meanwhile. So
tries at the same moment, in any process, can never let more than the limit
through; at worst a few more of them are refused.
"""

import math
from datetime import datetime, timedelta

from flask import request
from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.orm import InstrumentedAttribute
from werkzeug.exceptions import TooManyRequests

from .db import get_db
from .models import LoginFailure, utcnow

MAX_FAILURES_PER_NAME = 5
MAX_FAILURES_PER_ADDRESS = 20
LOGIN_WINDOW = timedelta(minutes=15)


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


def record_attempt(username_key: str | None) -> LoginFailure:
    """Write this login attempt down as a failure, or refuse it with 429.

    username_key is the name in lower case, or "" for one that no account can
    have (failures then count against the address alone, in effect); None
    counts against the address alone (a registration).
    """
    db = get_db()
    now = utcnow()
    since = now - LOGIN_WINDOW
    # The longest IPv6 address in text fits; a zone index ("%eth0") may not.
    attempt = LoginFailure(
        username_key=username_key or "", address=(request.remote_addr or "")[:45], created=now
    )
    checks = [(FROM_ADDRESS, attempt.address, MAX_FAILURES_PER_ADDRESS)]
    if username_key is not None:
        checks.append((BY_NAME, attempt.username_key, MAX_FAILURES_PER_NAME))
    for (clear_out, _), value, _ in checks:
        db.execute(clear_out, {"value": value, "since": since})
    db.add(attempt)
    db.commit()
    for (_, count), value, limit in checks:
        failures, oldest = db.execute(count, {"value": value, "since": since}).one()
        if failures > limit:
            db.delete(attempt)  # a refused try is not a guess
            db.commit()
            wait = seconds_until(oldest + LOGIN_WINDOW, now)
            minutes = math.ceil(wait / 60)
            raise TooManyRequests(
                f"Too many tries. Wait {minutes} minute{'s' if minutes > 1 else ''}, "
                "then try again.",
                retry_after=wait,
            )
    db.commit()
    return attempt


def clear_failures(attempt: LoginFailure) -> None:
    """The password was right: forget the name's failures; the caller commits."""
    get_db().execute(delete(LoginFailure).where(LoginFailure.username_key == attempt.username_key))


def seconds_until(when: datetime, now: datetime) -> int:
    return max(1, math.ceil((when - now).total_seconds()))
