"""The package's import graph: no circles, type-only imports included (the floors of
pyproject.toml's import contract, checked by lint-imports, allow none across floors; this
checks inside a floor too)."""

from __future__ import annotations

import grimp


def circles_of(edges: dict[str, list[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    modules = sorted(edges)
    index, low, on_stack, stack, circles, counter = {}, {}, set(), [], [], [0]
    for root in modules:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter[0]
                counter[0] += 1
                stack.append(node)
                on_stack.add(node)
            if i < len(edges[node]):
                work.append((node, i + 1))
                nxt = edges[node][i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    circles.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return circles


def test_circles_are_found():
    edges = {"a": ["b"], "b": ["c"], "c": ["a", "d"], "d": [], "e": ["e2"], "e2": ["e"], "f": ["a"]}
    assert sorted(circles_of(edges)) == [["a", "b", "c"], ["e", "e2"]]
    assert circles_of({"a": ["b"], "b": []}) == []


def test_no_module_imports_itself_through_others():
    graph = grimp.build_graph("neurofm", exclude_type_checking_imports=False)
    modules = set(graph.modules)
    edges = {m: sorted(set(graph.find_modules_directly_imported_by(m)) & modules) for m in modules}
    assert len(edges) > 60 and edges["neurofm.finetune.classifier"]
    assert circles_of(edges) == []
    # the scikit-learn transformer reads the encoder, not the finetuning layer
    assert not any(m.startswith("neurofm.finetune") for m in edges["neurofm.sklearn"])
