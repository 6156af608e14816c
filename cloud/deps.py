"""Dependencies shared by the routers: one database session per request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session


def _session(request: Request) -> Iterator[Session]:
    """One session per request, from the app's engine."""
    with request.app.state.sessions() as session:
        yield session


Db = Annotated[Session, Depends(_session)]
