from datetime import UTC, datetime

from sqlalchemy import Computed, ForeignKey, Index, MetaData, String, Text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.schema import CreateColumn

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
    return datetime.now(UTC).replace(tzinfo=None)


# On MariaDB, every table in utf8mb4 whatever the database's default: text
# that can hold any character a form accepts (an emoji, for one).
UTF8MB4 = {"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_unicode_ci"}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    __table_args__: dict | tuple = UTF8MB4


class User(Base):
    __tablename__ = "user"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(USERNAME_MAX_LENGTH), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created: Mapped[datetime] = mapped_column(default=utcnow)
    # lower(username), kept by the database: its unique index keeps "Alice"
    # and "alice" from both registering, on every backend.
    username_key: Mapped[str | None] = mapped_column(
        String(USERNAME_MAX_LENGTH), Computed("lower(username)"), index=True, unique=True
    )

    posts: Mapped[list["Post"]] = relationship(back_populates="author")
    sessions: Mapped[list["UserSession"]] = relationship(
        back_populates="user", cascade="all, delete-orphan", passive_deletes=True
    )


class UserSession(Base):
    """A logged-in browser: its cookie holds a random token, this row its hash."""

    __tablename__ = "user_session"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), index=True, unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    created: Mapped[datetime] = mapped_column(default=utcnow)

    user: Mapped[User] = relationship(back_populates="sessions")


class LoginFailure(Base):
    """A wrong password (or unknown name), counted by name and by address."""

    __tablename__ = "login_failure"
    __table_args__ = (
        Index("ix_login_failure_username_key", "username_key", "created"),
        Index("ix_login_failure_address", "address", "created"),
        UTF8MB4,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    username_key: Mapped[str] = mapped_column(String(USERNAME_MAX_LENGTH))
    address: Mapped[str] = mapped_column(String(45))  # the longest IPv6 address
    created: Mapped[datetime] = mapped_column(default=utcnow)


class Post(Base):
    __tablename__ = "post"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(TITLE_MAX_LENGTH))
    body: Mapped[str] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(default=utcnow)
    # Posts written before accounts existed have no author.
    author_id: Mapped[int | None] = mapped_column(
        ForeignKey("user.id"), index=True, info={"sqlite_inline_references": True}
    )

    author: Mapped[User | None] = relationship(back_populates="posts")


# On SQLite, `run.py init` writes post.author_id as revision 2's ADD COLUMN
# does, `author_id INTEGER REFERENCES user (id)`, not as a table-level FOREIGN
# KEY: SQLite can DROP COLUMN a column whose reference is its own, never one
# that a table constraint names, and revision 2's downgrade drops it in place.
for foreign_key in Post.__table__.c.author_id.foreign_keys:
    assert foreign_key.constraint is not None  # set when the table was made
    foreign_key.constraint.ddl_if(callable_=lambda *args, dialect, **kw: dialect.name != "sqlite")


@compiles(CreateColumn, "sqlite")
def references_inline(create: CreateColumn, compiler, **kw) -> str:
    text = compiler.visit_create_column(create, **kw)
    column = create.element
    if column.info.get("sqlite_inline_references"):
        for foreign_key in column.foreign_keys:
            referred = foreign_key.column
            text += (
                f" REFERENCES {compiler.preparer.format_table(referred.table)}"
                f" ({compiler.preparer.quote(referred.name)})"
            )
    return text


@compiles(Computed, "postgresql")
def stored_on_postgresql(computed: Computed, compiler, **kw) -> str:
    # PostgreSQL indexes only STORED generated columns (revision 3 asks for
    # STORED there too); elsewhere the database's default, VIRTUAL.
    expression = compiler.sql_compiler.process(
        computed.sqltext, include_table=False, literal_binds=True
    )
    return f"GENERATED ALWAYS AS ({expression}) STORED"
