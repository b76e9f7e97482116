"""A Flask test client carrying a fresh API token (every endpoint but health needs one)."""

from service.store import make_engine, make_sessionmaker
from service.store.tokens import create_token


def authorized_client(app, database_url: str, user: str = "bench"):
    """A test client of ``app`` sending a new token of ``user`` with every request."""
    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine)() as session:
            token = create_token(session, user)
            session.commit()
    finally:
        engine.dispose()
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client
