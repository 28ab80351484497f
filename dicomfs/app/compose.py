"""The parts of one mount, built from ``MountOptions``, started in FUSE init() and stopped in destroy().

Nothing here runs before libfuse has daemonized: forking would lose threads and SQLite handles.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Sequence

from dicomfs.app import notify
from dicomfs.app.options import MountOptions
from dicomfs.app.statusreport import StatusReport
from dicomfs.core.catalog import Catalog
from dicomfs.core.instances import Instances
from dicomfs.core.recentlog import RecentProblems
from dicomfs.core.retrieval import RetrievalScheduler
from dicomfs.core.store import InstanceStore, ListingCache
from dicomfs.core.walkguard import WalkGuard
from dicomfs.dimse import patches, spool
from dicomfs.dimse.admission import ExpectedOnly
from dicomfs.dimse.client import PacsAddress, PacsClient
from dicomfs.dimse.queries import DimseQueries
from dicomfs.dimse.receiver import InstanceReceiver
from dicomfs.dimse.scp import StorageSCP
from dicomfs.dimse.strategy import DimseRetrieval
from dicomfs.views import naming
from dicomfs.views.bydate import ByDate
from dicomfs.views.byid import ByIdentifier
from dicomfs.views.byuid import ByUid
from dicomfs.views.control import CONTROL_DIR, ControlView
from dicomfs.views.hierarchy import PatientHierarchy, base_name
from dicomfs.views.node import Namespace
from dicomfs.views.querydir import QueryDirectories
from dicomfs.views.root import Root

LOGGER = logging.getLogger(__name__)


def client_ssl_context(opts: MountOptions) -> ssl.SSLContext | None:
    """The TLS context for associations to the PACS, or None without ``tls``."""
    if not opts.tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=opts.tlsca or None)
    # PACS certificates name hosts inconsistently; trust comes from the CA given in tlsca.
    context.check_hostname = False
    if opts.tlscert:
        context.load_cert_chain(opts.tlscert, opts.tlskey or None)
    return context


def server_ssl_context(opts: MountOptions) -> ssl.SSLContext | None:
    """The TLS context of our storage SCP, or None without ``tls``."""
    if not opts.tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=opts.tlsca or None)
    context.load_cert_chain(opts.tlscert, opts.tlskey or None)
    if opts.tlsca:
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class MountServices:
    """Client, caches, receiver, storage SCP, scheduler, catalog and views of one mount.

    After :meth:`start`, :attr:`namespace` is what front ends consume; :meth:`stop` ends it all.
    """

    namespace: Namespace

    def __init__(
        self, opts: MountOptions, hooks: Sequence[tuple[Callable[[], None], Callable[[], None]]] = ()
    ):
        self.opts = opts
        self._hooks = list(hooks)  # (start, stop) pairs run around ours, e.g. the demo archive
        self._scp: StorageSCP | None = None
        self._started: list[Callable[[], None]] = []
        self._stopping_told = False

    def start(self) -> None:
        opts = self.opts
        # pynetdicom's process-wide tuning, once, before any association of ours (importing
        # dicomfs patches nothing; the demo archive's SCP, started by a hook, shares the tuning).
        patches.install()
        self._started.append(patches.uninstall)  # the last stop gives the process stock pynetdicom
        # The last warnings and errors, for the status file (dicomfs status).
        problems = RecentProblems()
        problems.install()
        self._started.append(problems.remove)
        for start, stop in self._hooks:
            start()
            self._started.append(stop)
        address = PacsAddress(
            host=opts.serveraddress,
            port=opts.serverport,
            called_aet=opts.aec,
            calling_aet=opts.aet,
            timeout=opts.timeout,
            max_associations=opts.maxassoc,
            ssl_context=client_ssl_context(opts),
        )
        self.client = PacsClient(address, model=opts.model)
        self._started.append(self.client.close)  # its background reachability check
        self.store = InstanceStore(
            opts.cachedir, opts.cachesize, namespace=f"{opts.aec}@{opts.serveraddress}:{opts.serverport}"
        )
        # pynetdicom spools every received data set to a file (patches: chunked receiving):
        # into our partial/ folder, on the cache's file system (dicomfs.dimse.spool).
        spool.install(self.store.partial_dir)
        self._started.append(spool.uninstall)
        self._started.append(self.store.close)
        self.listings = ListingCache(opts.cachedir, opts.ttl)
        self._started.append(self.listings.close)
        # Only C-STOREs a retrieval asked for are let in (the scheduler says which).
        expected = ExpectedOnly()
        self.receiver = InstanceReceiver(self.store, expected)
        if opts.retrieve == "move":
            self._scp = StorageSCP(
                self.receiver,
                opts.aet,
                opts.localaddress,
                opts.localport,
                opts.timeout,
                server_ssl_context(opts),
            )
            self._scp.start()
            self._started.append(self._scp.stop)
        # One association stays free for listings while retrievals run (maxassoc bounds them all).
        retrievals = DimseRetrieval(
            self.client, self.receiver, method=opts.retrieve, destination_aet=opts.aet, timeout=opts.timeout
        )
        self.scheduler = RetrievalScheduler(
            retrievals,
            expected,
            self.store,
            workers=max(1, opts.maxassoc - 1),
            parallel=opts.parallel,
            timeout=opts.timeout,
        )
        self.scheduler.start()
        self._started.append(self.scheduler.stop)
        prefix = f"{opts.aec}@{opts.serveraddress}:{opts.serverport}/{opts.model}"
        self.catalog = Catalog(
            DimseQueries(self.client),
            self.listings,
            cache_prefix=prefix,
            study_time=naming.study_time,
            describe=base_name,
            # For another caller's C-FIND of the same listing: as long as a reader waits for a
            # stalled retrieval (``timeout`` bounds each C-FIND response, not the whole answer).
            wait_s=2 * opts.timeout + 5,
        )
        self.catalog.start_prefetching()
        self._started.append(self.catalog.stop_prefetching)
        instances = Instances(
            self.store, self.scheduler, WalkGuard(opts.statseries if opts.sizes == "guarded" else None)
        )
        hierarchy = PatientHierarchy(self.catalog, instances)
        status = StatusReport(
            opts,
            usage=self.usage,
            opens=instances,
            in_flight=self.scheduler.in_flight,
            problems=problems.recent,
            pacs_down=lambda: self.client.health.down_reason,
        )
        # /.dicomfs/status.json: hidden from listings (dicomfs status reads it).
        control = ControlView(status.report, hierarchy.mount_time)
        # The views beside the patient tree (README "Views"): listed only when asked for, as a
        # walk of the root (du, find, an indexer) would otherwise walk by-date's whole calendar.
        views = catalog_views(self.catalog, instances, hierarchy.mount_time)
        listed = views if opts.views == "listed" else {}
        hidden = {} if opts.views == "listed" else views
        self.namespace = Root(hierarchy, mounts=listed, hidden={**hidden, CONTROL_DIR: control})
        LOGGER.info("mounted %s at %s (retrieve=%s)", prefix, opts.mountpoint, opts.retrieve)
        # FUSE init() runs once the kernel has mounted us: a Type=notify unit is ready now.
        notify.notify(notify.READY, f"STATUS=serving {prefix} at {opts.mountpoint}")

    def usage(self) -> tuple[int, int]:
        """Bytes the instance cache holds (as diskcache counts them against its limit: the files
        and its index), and that limit (``cachesize``); what ``df`` shows."""
        return self.store.volume, self.opts.cachesize

    def _tell_stopping(self) -> None:
        if not self._stopping_told:
            self._stopping_told = True
            notify.notify(notify.STOPPING, f"STATUS=unmounting {self.opts.mountpoint}")

    def end_retrievals(self) -> None:
        """The session is ending: fail the readers that wait for retrievals, cancel those."""
        self._tell_stopping()
        scheduler = getattr(self, "scheduler", None)
        if scheduler is not None:
            scheduler.stop()

    def stop(self) -> None:
        self._tell_stopping()
        while self._started:
            stop = self._started.pop()
            try:
                stop()
            except Exception:
                LOGGER.exception("while stopping")
        LOGGER.info("unmounted %s", self.opts.mountpoint)

    def __enter__(self) -> Namespace:
        """The started namespace (``with build_namespace(opts) as namespace:``); stopped on exit."""
        return self.namespace

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def catalog_views(catalog: Catalog, instances: Instances, mount_time: float) -> dict[str, Namespace]:
    """The views beside the patient tree, by their top-level names (README "Views")."""
    return {
        "by-date": ByDate(catalog, instances, mount_time=mount_time),
        "by-uid": ByUid(catalog, instances, mount_time=mount_time),
        "by-id": ByIdentifier(catalog, instances, keyword="PatientID", mount_time=mount_time),
        "by-accession": ByIdentifier(catalog, instances, keyword="AccessionNumber", mount_time=mount_time),
        "query": QueryDirectories(catalog, instances, mount_time=mount_time),
    }


def build_namespace(opts: MountOptions) -> MountServices:
    """Every part of one mount but FUSE, started: for tests and front ends other than FUSE.

    Parameters
    ----------
    opts : MountOptions
        As for a mount (``mountpoint`` is only logged). With ``retrieve=move`` the storage SCP
        listens on ``localaddress:localport``; ``retrieve=get`` opens no port.

    Returns
    -------
    MountServices
        Started: its ``namespace`` (a :class:`~dicomfs.views.node.Namespace`) is ready to use.
        Call ``stop()`` to end its threads and close the caches; or use it as a context manager,
        which gives the namespace and stops everything on exit.

    Raises
    ------
    OSError
        The cache directory or the storage SCP's port cannot be used (nothing is left running).
    """
    services = MountServices(opts)
    try:
        services.start()
    except BaseException:
        services.stop()
        raise
    return services
