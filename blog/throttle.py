"""Slow down password guessing: failed logins counted in the database.

Every process and thread of the blog counts in the same login_failure table.
Within LOGIN_WINDOW, an account name may fail MAX_FAILURES_PER_NAME times and an
address MAX_FAILURES_PER_ADDRESS times; further tries get 429 Too Many Requests
with Retry-After, until the oldest failure leaves the window. A successful
login clears its name's failures.

An attempt is written down as a failure before its password is checked, and
counted only if it is among the first few: two processes checking at once
never let one try too many through.
"""

import math
from datetime import datetime, timedelta

from flask import request
from sqlalchemy import bindparam, delete, func, select
from werkzeug.exceptions import TooManyRequests

from .db import get_db
from .models import LoginFailure, utcnow

MAX_FAILURES_PER_NAME = 5
MAX_FAILURES_PER_ADDRESS = 20
LOGIN_WINDOW = timedelta(minutes=15)

# Of the failures in the window up to this attempt: how many, and the oldest.
FAILURES_BY_NAME, FAILURES_FROM_ADDRESS = (
    select(func.count(), func.min(LoginFailure.created))
    .where(column == bindparam("value"))
    .where(LoginFailure.created > bindparam("since"))
    .where(LoginFailure.id <= bindparam("attempt"))
    for column in (LoginFailure.username_key, LoginFailure.address)
)


def record_attempt(username: str) -> LoginFailure:
    """Write this login attempt down as a failure, or refuse it with 429."""
    db = get_db()
    now = utcnow()
    since = now - LOGIN_WINDOW
    db.execute(delete(LoginFailure).where(LoginFailure.created <= since))
    attempt = LoginFailure(
        username_key=username.lower(), address=request.remote_addr or "", created=now
    )
    db.add(attempt)
    db.flush()  # its id: the attempts before it are the ones that count
    for query, value, limit in (
        (FAILURES_BY_NAME, attempt.username_key, MAX_FAILURES_PER_NAME),
        (FAILURES_FROM_ADDRESS, attempt.address, MAX_FAILURES_PER_ADDRESS),
    ):
        count, oldest = db.execute(
            query, {"value": value, "since": since, "attempt": attempt.id}
        ).one()
        if count > limit:
            db.delete(attempt)  # a refused try is not a guess
            db.commit()
            raise TooManyRequests(
                "Too many failed logins. Wait a while, then try again.",
                retry_after=seconds_until(oldest + LOGIN_WINDOW, now),
            )
    db.commit()
    return attempt


def clear_failures(attempt: LoginFailure) -> None:
    """The password was right: forget the name's failures; the caller commits."""
    get_db().execute(delete(LoginFailure).where(LoginFailure.username_key == attempt.username_key))


def seconds_until(when: datetime, now: datetime) -> int:
    return max(1, math.ceil((when - now).total_seconds()))
