"""What every part of the run store shares: the database, its one writer, the signals to watchers, the notices
to engines, the limits and the page-token key. `RunStore` (store.py) sets them; the parts it is made of (appends,
leases, approvals, queries, threads, imports) use them.
"""

from services.common.db.database import Database
from services.common.db.group_commit import GroupCommit
from services.common.pages import PageTokens
from services.runs.budget_book import BudgetBook
from services.runs.checks import StoreLimits
from services.runs.executors import ExecutorNotices
from services.runs.price_book import PriceBook
from services.runs.signals import RunSignals


class StoreParts:
    """The state the run store's parts share; only `RunStore.__init__` assigns it."""

    database: Database
    signals: RunSignals
    notices: ExecutorNotices
    limits: StoreLimits
    #: Signs and reads ListRuns' and ListThreads' page tokens; the settings' key in a service (app.py).
    page_tokens: PageTokens
    #: The model prices appends apply (services/runs/price_book.py).
    price_book: PriceBook
    #: The budgets create and append enforce (services/runs/budgets.py).
    budget_book: BudgetBook
    #: Every write goes through it: the appends of many runs share a transaction and an INSERT
    #: (`StepAppends._append_batch`), so do most creates (`RunStore._create_batch`), and every other write runs
    #: in a savepoint of its own within the batch
    #: (except the batches of a bulk import: `RunImports.import_runs` says why).
    _writer: GroupCommit
