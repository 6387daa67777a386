"""A repository class whose page sizes contradict each other is refused where it is defined."""

from __future__ import annotations

import pytest

from asyncdal import Repository
from tests.blog import Post, PostRepository


@pytest.mark.parametrize(("default", "maximum"), [(200, 100), (0, 100), (-1, 10), (1, 0)])
def test_a_default_page_size_outside_1_to_max_page_size_is_refused(
    default: int, maximum: int
) -> None:
    # It was taken, and every list() without a limit then failed with a 422 for the client.
    with pytest.raises(TypeError) as refused:

        class Posts(Repository[Post]):
            default_page_size = default
            max_page_size = maximum

    message = str(refused.value)
    assert message == (
        f"Posts: default_page_size ({default}) must be between 1 and max_page_size ({maximum})"
    )


def test_a_subclass_lowering_only_the_maximum_is_checked_against_the_inherited_default() -> None:
    assert PostRepository.default_page_size == 10
    with pytest.raises(TypeError, match=r"default_page_size \(10\).*max_page_size \(5\)"):

        class FewPosts(PostRepository):
            max_page_size = 5


def test_equal_sizes_are_taken() -> None:
    class OnePage(Repository[Post]):
        default_page_size = 20
        max_page_size = 20

    assert (OnePage.default_page_size, OnePage.max_page_size) == (20, 20)
