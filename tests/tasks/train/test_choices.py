"""The retrain options' one check, used by the CLI and by the flow."""

from __future__ import annotations

import pytest

from tasks.train.choices import GROUP_RULES, PROMOTE_POLICIES, check_retrain_options


@pytest.mark.parametrize(("args", "message"), [
    (("sometimes", "subject", 1), "--promote must be one of if-better, always, never"),
    (("always", "camera", 1), "--group-by must be one of subject, prefix, none"),
    (("always", "subject", 0), "--epochs and --batch-size must be at least 1"),
])
def test_bad_choices_get_one_line_naming_the_allowed_values(args, message) -> None:
    with pytest.raises(ValueError, match=message):
        check_retrain_options(*args)


def test_every_allowed_combination_passes() -> None:
    for promote in PROMOTE_POLICIES:
        for group in GROUP_RULES:
            check_retrain_options(promote, group, 1, 1)
