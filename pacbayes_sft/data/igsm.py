"""An iGSM-style generator of arithmetic word problems with exact difficulty control.

A problem is a set of statements about named quantities, arithmetic modulo a small prime:

    leaf value      ``a: 3 .``           (a value record; ``a:`` is one token)
    operation       ``b = a + c .``      (a definition)
    query           ``? q``

The ``op`` needed operations form a DAG whose sink is the query: operation i always uses the
result of operation i−1 (so every one of them is needed) and its other operand is a leaf or an
earlier result. Distractors are statements the solution must skip: unused leaves, and
operations that depend on the query (downstream of it, so never needed). All statements are
shuffled. The reference solution computes the needed operations in a canonical topological
order — repeatedly the first statement, in problem order, whose operands are all known — one
step per operation:

    ``b = a + c , a: 3 , c: 4 , b: 0 .``      ...      ``answer 0``

Every value anywhere is written ``name: value`` (a leaf in the problem; an operand restated,
or a result, in the solution), where ``name:`` is a token of its own that appears nowhere else.
Looking a value up is then the one-token induction pattern — find the earlier occurrence of
the current token and copy what follows — the first circuit small transformers learn. Measured
on 2 CPU cores (docs/RESULTS.md): with a separate ``:`` token (``a : 3``, key two tokens back)
a 1M-parameter model attended softly over *all* leaf values and stayed near chance on leaf
lookups after 45 minutes of pretraining, while looking up results of the previous step (a
recency rule) was ~90% right; an earlier format with ``= 3 + 4`` after the name ``c`` also put
a's value two tokens after a name, a decoy.
``op`` counts arithmetic operations exactly.

A problem is a pure function of (seed, op, config). Its *template* — the DAG, operators and the
shape of the distractors, without names or values — is hashed, and train/test splits take
disjoint template sets. Pure Python: no torch, no network.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

NAMES = tuple("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
OPERATORS = ("+", "-", "*")


@dataclass(frozen=True)
class IGSMConfig:
    """Knobs of the generator (all defaults are the toolkit's default task)."""

    modulus: int = 7
    """Arithmetic modulo this prime (iGSM uses 23; 7 keeps the operation tables learnable)."""
    operators: tuple[str, ...] = ("+", "-", "*")
    """Operators drawn uniformly for each operation."""
    p_reuse: float = 0.3
    """Probability that an operation's second operand is an earlier result instead of a leaf."""
    extra_leaves: tuple[int, int] = (1, 2)
    """Range of unused leaf statements (distractors)."""
    downstream_ops: tuple[int, int] = (1, 2)
    """Range of distractor operations that depend on the query (never needed)."""
    test_fraction: float = 0.2
    """Fraction of templates (by hash) reserved for the test split."""

    def __post_init__(self) -> None:
        if self.modulus < 2 or any(self.modulus % d == 0 for d in range(2, int(self.modulus**0.5) + 1)):
            raise ValueError(f"modulus must be a prime >= 2, got {self.modulus!r}")
        if self.modulus > 97:
            raise ValueError(f"modulus must be <= 97 (one token per value), got {self.modulus!r}")
        if not self.operators or any(o not in OPERATORS for o in self.operators):
            raise ValueError(f"operators must be a non-empty subset of {OPERATORS}, got {self.operators!r}")
        if not 0.0 <= self.p_reuse <= 1.0:
            raise ValueError(f"p_reuse must lie in [0, 1], got {self.p_reuse!r}")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must lie in (0, 1), got {self.test_fraction!r}")
        for nm in ("extra_leaves", "downstream_ops"):
            lo, hi = getattr(self, nm)
            if not 0 <= lo <= hi:
                raise ValueError(f"{nm} must be a range (lo, hi) with 0 <= lo <= hi, got {(lo, hi)!r}")


@dataclass
class Problem:
    """One generated problem with its reference solution and metadata."""

    prompt: str
    response: str
    answer: int
    op: int
    template: str
    split: str
    seed: int
    steps: list[dict] = field(default_factory=list)

    @property
    def cot_tokens(self) -> int:
        """Reference CoT length in (whitespace) tokens, which is exactly the tokenizer's count."""
        return len(self.response.split())

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cot_tokens"] = self.cot_tokens
        d["difficulty"] = self.op
        return d


def apply_op(op: str, x: int, y: int, p: int) -> int:
    if op == "+":
        return (x + y) % p
    if op == "-":
        return (x - y) % p
    return (x * y) % p


def _template_hash(parts: list) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def template_split(template: str, test_fraction: float) -> str:
    """'test' for a fixed fraction of template hashes, else 'train' (deterministic)."""
    return "test" if int(template, 16) % 10_000 < test_fraction * 10_000 else "train"


def _abstract_structure(rng: random.Random, op: int, cfg: IGSMConfig):
    """The template: the needed operations and downstream distractors as operand references
    (("L", k) = leaf k, ("R", j) = result of operation j, ("X", k) = extra leaf, ("D", d) =
    distractor d, ("Q", 0) = the query), and the numbers of leaves and extra leaves."""
    n_leaves = 0
    ops: list[tuple[str, tuple, tuple]] = []
    for i in range(op):
        if i == 0:
            first = ("L", 0)
            n_leaves = 1
        else:
            first = ("R", i - 1)
        if i >= 2 and rng.random() < cfg.p_reuse:
            second = ("R", rng.randrange(0, i - 1))
        elif n_leaves > 0 and rng.random() < 0.25:
            second = ("L", rng.randrange(0, n_leaves))
        else:
            second = ("L", n_leaves)
            n_leaves += 1
        if rng.random() < 0.5:
            first, second = second, first
        ops.append((rng.choice(cfg.operators), first, second))
    n_extra = rng.randint(*cfg.extra_leaves)
    n_down = rng.randint(*cfg.downstream_ops)
    down: list[tuple[str, tuple, tuple]] = []
    for d in range(n_down):
        prev = ("Q", 0) if d == 0 else ("D", d - 1)
        other = ("X", rng.randrange(n_extra)) if n_extra and rng.random() < 0.7 else ("L", rng.randrange(n_leaves))
        down.append(
            (rng.choice(cfg.operators), prev, other) if rng.random() < 0.5 else (rng.choice(cfg.operators), other, prev)
        )
    return ops, down, n_leaves, n_extra


def _solve(statements: list, values: dict, query: str, needed: set, p: int) -> tuple[list[dict], dict]:
    """Canonical solution: repeatedly the first ready, not yet computed, statement in problem order."""
    known = dict(values)
    steps = []
    while query not in known:
        for kind, _, eq in statements:
            if kind == "op" and eq[0] not in known and eq[1] in known and eq[3] in known:
                lhs, a, o, b = eq
                if lhs not in needed:  # downstream distractors depend on the query: never ready first
                    raise AssertionError("a distractor became ready before the query")  # pragma: no cover
                known[lhs] = apply_op(o, known[a], known[b], p)
                steps.append({"lhs": lhs, "a": a, "op": o, "b": b, "va": known[a], "vb": known[b], "value": known[lhs]})
                break
        else:  # pragma: no cover - the construction guarantees progress
            raise AssertionError("no ready statement")
    return steps, known


def generate_problem(seed: int, op: int, config: IGSMConfig | None = None) -> Problem:
    """The problem for (seed, op, config): op ≥ 1 needed operations, shuffled, with distractors."""
    cfg = config or IGSMConfig()
    if not isinstance(op, int) or isinstance(op, bool) or op < 1:
        raise ValueError(f"op must be an integer >= 1, got {op!r}")
    rng = random.Random(f"igsm:{seed}:{op}:{cfg.modulus}")
    p = cfg.modulus
    ops, down, n_leaves, n_extra = _abstract_structure(rng, op, cfg)
    template = _template_hash([ops, down, n_extra])
    # Concrete names and values.
    total_names = n_leaves + op + n_extra + len(down)
    if total_names > len(NAMES):
        raise ValueError(f"op={op} needs {total_names} names; at most {len(NAMES)} are available")
    names = rng.sample(NAMES, total_names)
    groups = {
        "L": names[:n_leaves],
        "R": names[n_leaves : n_leaves + op],
        "X": names[n_leaves + op : n_leaves + op + n_extra],
        "D": names[n_leaves + op + n_extra :],
    }
    values = {nm: rng.randrange(p) for nm in groups["L"] + groups["X"]}
    query = groups["R"][-1]

    def ref(r: tuple) -> str:
        return query if r[0] == "Q" else groups[r[0]][r[1]]

    statements: list[tuple[str, str, tuple | None]] = []  # (kind, text, (lhs, a, op, b))
    for nm in groups["L"] + groups["X"]:
        statements.append(("leaf", f"{nm}: {values[nm]} .", None))
    for (o, a, b), nm in [*zip(ops, groups["R"]), *zip(down, groups["D"])]:
        statements.append(("op", f"{nm} = {ref(a)} {o} {ref(b)} .", (nm, ref(a), o, ref(b))))
    rng.shuffle(statements)
    prompt = " ".join(s[1] for s in statements) + f" ? {query}"
    steps, known = _solve(statements, values, query, set(groups["R"]), p)
    response = " ".join(
        f"{s['lhs']} = {s['a']} {s['op']} {s['b']} , {s['a']}: {s['va']} , {s['b']}: {s['vb']} , {s['lhs']}: {s['value']} ."
        for s in steps
    )
    return Problem(
        prompt=prompt,
        response=response + f" answer {known[query]}",
        answer=known[query],
        op=op,
        template=template,
        split=template_split(template, cfg.test_fraction),
        seed=seed,
        steps=steps,
    )


def generate(
    n: int,
    ops: int | list[int] | tuple[int, ...],
    *,
    split: str | None = None,
    seed: int = 0,
    config: IGSMConfig | None = None,
    max_tries: int = 200,
) -> list[Problem]:
    """n problems with op drawn uniformly from ``ops``, keeping only ``split`` ('train'/'test') if given.

    Problem k of the stream uses seed ``seed * 1_000_003 + k`` so that streams are reproducible.
    """
    if split not in (None, "train", "test"):
        raise ValueError(f"split must be 'train', 'test' or None, got {split!r}")
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    op_list = [ops] if isinstance(ops, int) else list(ops)
    if not op_list:
        raise ValueError("ops must not be empty")
    cfg = config or IGSMConfig()
    rng = random.Random(f"stream:{seed}")
    out: list[Problem] = []
    k = 0
    misses = 0
    while len(out) < n:
        op = rng.choice(op_list)
        prob = generate_problem(seed * 1_000_003 + k, op, cfg)
        k += 1
        if split is None or prob.split == split:
            out.append(prob)
            misses = 0
        else:
            misses += 1
            if misses > max_tries:
                raise ValueError(f"could not draw {split!r} problems for ops={op_list}: too few templates")
    return out


def iter_problems(
    ops: list[int], *, split: str | None = None, seed: int = 0, config: IGSMConfig | None = None
) -> Iterator[Problem]:
    """An endless reproducible stream of problems (for pretraining)."""
    cfg = config or IGSMConfig()
    rng = random.Random(f"stream:{seed}")
    k = 0
    while True:
        prob = generate_problem(seed * 1_000_003 + k, rng.choice(ops), cfg)
        k += 1
        if split is None or prob.split == split:
            yield prob


def test_slices(
    ops: list[int] | tuple[int, ...], n_per_op: int, *, seed: int, config: IGSMConfig | None = None
) -> dict[int, list[Problem]]:
    """The held-out-template test set: ``n_per_op`` test-split problems of each op count, the
    slice of op k drawn from the stream seeded ``seed + k`` (so adding an op never changes the
    others' problems). The one recipe behind every test set of the toolkit."""
    return {op: generate(n_per_op, op, split="test", seed=seed + op, config=config) for op in ops}


def test_set(
    ops: list[int] | tuple[int, ...], n_per_op: int, *, seed: int, config: IGSMConfig | None = None
) -> list[Problem]:
    """:func:`test_slices` as one list, slice after slice in the order of ``ops``."""
    slices = test_slices(ops, n_per_op, seed=seed, config=config)
    return [p for op in ops for p in slices[op]]


def recall_drill(problem: Problem, seed: int, k: tuple[int, int] = (2, 5)) -> tuple[str, str]:
    """A retrieval drill on ``problem``'s statements: ``(prompt, response)``.

    The prompt keeps the statements and asks ``? x y ...`` for 2+ names defined in it; the
    response restates each one's statement in order — ``x: 3`` for a value, ``y = a + c`` for a
    definition — joined by ``,`` and closed by ``.``. Mixed into pretraining, drills give the
    two prompt-retrieval skills that solutions need (looking a leaf value up, copying a
    definition) several times the training signal they get from solutions alone, where they are
    a few percent of the tokens. Normal problems ask for one name, drills for at least two.
    """
    lo, hi = k
    if not 2 <= lo <= hi:
        raise ValueError(f"k must be a range (lo, hi) with 2 <= lo <= hi, got {k!r}")
    rng = random.Random(f"recall:{seed}")
    stmts = problem.prompt.rsplit(" ?", 1)[0].split(" . ")
    stmts = [st.rstrip(" .") for st in stmts]
    picked = rng.sample(stmts, min(len(stmts), rng.randint(lo, hi)))
    names = [st.split()[0].rstrip(":") for st in picked]
    prompt = problem.prompt.rsplit(" ?", 1)[0] + " ? " + " ".join(names)
    return prompt, " , ".join(picked) + " ."


def parse_statements(prompt: str) -> tuple[dict[str, int], dict[str, tuple[str, str, str]]]:
    """The problem's leaf values ``{name: value}`` and definitions ``{name: (a, op, b)}``."""
    values: dict[str, int] = {}
    defs: dict[str, tuple[str, str, str]] = {}
    for stmt in prompt.split(" ."):
        toks = stmt.split()
        if len(toks) == 2 and toks[0].endswith(":"):
            values[toks[0][:-1]] = int(toks[1])
        elif len(toks) == 5 and toks[1] == "=":
            defs[toks[0]] = (toks[2], toks[3], toks[4])
    return values, defs


STEP_ROLES = (
    "schedule", "format", "define", "define", "define", "format", "restate", "lookup",
    "format", "restate", "lookup", "format", "restate", "arithmetic", "format",
)  # fmt: skip
"""Role of each of the 15 tokens of a solution step ``b = a + c , a: 3 , c: 4 , b: 0 .``:
choosing the next computable statement, copying its definition, restating a name, looking a
value up, computing the result, or fixed format."""


def response_roles(response: str, prompt: str | None = None) -> list[str]:
    """The role of every (whitespace) token of a reference solution: the step roles of
    :data:`STEP_ROLES`, then ``format`` for ``answer`` and ``answer`` for the final value.

    With the ``prompt``, a lookup is split into ``lookup_prompt`` (a leaf value, stated in the
    problem) and ``lookup_solution`` (a result computed in an earlier step). Used to say *which
    skill* a model gets wrong (teacher-forced errors per role)."""
    toks = response.split()
    n_steps, rest = divmod(len(toks) - 2, len(STEP_ROLES))
    if rest or n_steps < 1 or toks[-2] != "answer":
        raise ValueError(f"response is not a reference solution of this generator: {response!r}")
    roles = [*STEP_ROLES * n_steps, "format", "answer"]
    if prompt is not None:
        leaves = parse_statements(prompt)[0]
        roles = [
            ("lookup_prompt" if toks[i - 1][:-1] in leaves else "lookup_solution") if r == "lookup" else r
            for i, r in enumerate(roles)
        ]
    return roles


def vocabulary(modulus: int = 7) -> list[str]:
    """Every word the generator can emit, for a word-level tokenizer."""
    return [
        *NAMES,
        *(f"{n}:" for n in NAMES),
        *(str(v) for v in range(modulus)),
        *OPERATORS,
        "=",
        ".",
        ",",
        "?",
        "answer",
    ]

