"""Annotated attributes of a UnitOfWork subclass: repositories, and everything else."""

from __future__ import annotations

import pytest

from tests.models import UserRepository
from uow import Database, UnitOfWork, UnitOfWorkError


class LabelledUnitOfWork(UnitOfWork):
    users: UserRepository
    label: str  # not a repository: set on the instance

    def __init__(self, database: Database, label: str) -> None:
        super().__init__(database)
        self.label = label


def test_a_non_repository_annotation_set_on_the_instance_reads_back() -> None:
    uow = LabelledUnitOfWork(Database("sqlite://"), "orders")
    assert uow.label == "orders"


def test_an_unset_non_repository_annotation_raises_attribute_error() -> None:
    class Unset(UnitOfWork):
        note: int

    with pytest.raises(AttributeError, match="note"):
        _ = Unset(Database("sqlite://")).note


def test_a_repository_attribute_outside_a_block_says_to_use_with_uow() -> None:
    uow = LabelledUnitOfWork(Database("sqlite://"), "x")
    with pytest.raises(UnitOfWorkError, match="with uow:"):
        _ = uow.users
