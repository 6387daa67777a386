"""asyncdal's pytest plugin gives the fixtures: a throwaway database with these tables, and
``asyncdal_client``, whose requests commit into a transaction rolled back after each test.
Run with ``pytest examples/blog/tests``."""

import pytest
from fastapi import FastAPI
from sqlalchemy import MetaData

from blog_asyncdal.app import app
from blog_asyncdal.models import Base


@pytest.fixture(scope="session")
def asyncdal_metadata() -> MetaData:
    return Base.metadata


@pytest.fixture
def asyncdal_app() -> FastAPI:
    return app
