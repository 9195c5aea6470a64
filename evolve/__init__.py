"""The search: campaign loop, archive, selection, patches and proposers.

Nothing in this package knows about EPLB; it talks to a problem through `evolve.task.Task`.
"""
