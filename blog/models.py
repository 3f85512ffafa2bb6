from datetime import datetime, timezone

from sqlalchemy import ForeignKey, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# The revisions name their constraints and indexes the same way by hand, so
# that a migrated database and one made by `run.py init` are alike.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
}

# The largest id a URL may name: SQLite's INTEGER is 64 bits, and a larger
# number would fail in the driver instead of simply matching no row.
MAX_ID = 2**63 - 1
TITLE_MAX_LENGTH = 200
# What a TEXT column holds on MariaDB and MySQL, so a post fits every database.
BODY_MAX_BYTES = 65_535
USERNAME_MAX_LENGTH = 80


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    __tablename__ = "user"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(USERNAME_MAX_LENGTH), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created: Mapped[datetime] = mapped_column(default=utcnow)

    posts: Mapped[list["Post"]] = relationship(back_populates="author")


class Post(Base):
    __tablename__ = "post"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(TITLE_MAX_LENGTH))
    body: Mapped[str] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    # Posts written before accounts existed have no author.
    author_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"), index=True)

    author: Mapped[User | None] = relationship(back_populates="posts")
