"""Every ``Examples:`` block in the library's docstrings runs as written and prints what it shows (doctest on
the fenced ```py blocks, as Hugging Face checks theirs)."""

import doctest
import importlib
import inspect
import pkgutil
import re

import pytest

import refinestyle

FENCED = re.compile(r"```py\n(.*?)```", re.S)


def _examples() -> list[tuple[str, str]]:
    found = []
    for info in pkgutil.walk_packages(refinestyle.__path__, "refinestyle."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if getattr(obj, "__module__", None) != module.__name__ or not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            for block in FENCED.findall(inspect.getdoc(obj) or ""):
                found.append((f"{module.__name__}.{name}", block))
    return found


EXAMPLES = _examples()


def test_the_public_classes_have_examples():
    named = {name for name, _ in EXAMPLES}
    for cls in ("StyleGAN2Generator", "DomainTokens", "TokenSet", "RefineStyleModel"):
        assert any(name.endswith("." + cls) for name in named), cls


@pytest.mark.parametrize("name,block", EXAMPLES, ids=[name for name, _ in EXAMPLES])
def test_docstring_example_runs(name, block):
    test = doctest.DocTestParser().get_doctest(block, {}, name, name, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    result = runner.run(test, out=report.append)
    assert result.attempted > 0 and result.failed == 0, "".join(report)
