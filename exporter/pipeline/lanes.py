"""One lane per region: the stages of a batch pass, built on that region's DLI and OBS clients.

Lanes are made when a region is first used and kept for the pipeline's life. The in-flight budget
(`EXPORTER_CONCURRENCY` export calls) belongs to the region's gateway, so batches of one region share it
and a slow region never spends another region's budget.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from exporter.migration.ports import MigrationLedger
from exporter.models import RegionRoute
from exporter.pipeline.export import ExportStage
from exporter.pipeline.finish import Finisher
from exporter.pipeline.options import PipelineOptions
from exporter.pipeline.planning import Planner
from exporter.pipeline.verify import VerifyStage
from exporter.ports import Clock, DliApi, Ledger, ObjectStore, RegionClients, Regions, ReportWriter

__all__ = ["Lane", "Lanes", "SingleRegion"]


class SingleRegion:
    """`Regions` where every batch uses the same clients: one-endpoint deployments and tests."""

    __slots__ = ("_clients",)

    def __init__(self, dli: DliApi, store: ObjectStore, key: str = "default") -> None:
        self._clients = RegionClients(key, dli, store)

    async def clients(self, route: RegionRoute | None) -> RegionClients:
        return self._clients


@dataclass(frozen=True, slots=True)
class Lane:
    """The stages of one region."""

    planner: Planner
    export: ExportStage
    verify: VerifyStage
    finisher: Finisher
    store: ObjectStore
    clients: RegionClients


class Lanes:
    """Builds and caches a lane per route; remembers which route each region name was seen with."""

    def __init__(
        self,
        regions: Regions,
        ledger: Ledger,
        reports: ReportWriter,
        options: PipelineOptions,
        clock: Clock,
        migrations: MigrationLedger | None = None,
    ) -> None:
        self._migrations = migrations
        self._regions = regions
        self._ledger = ledger
        self._reports = reports
        self._options = options
        self._clock = clock
        self._lanes: dict[RegionRoute | None, Lane] = {}
        self._budgets: dict[str, asyncio.Semaphore] = {}
        self._routes: dict[str | None, RegionRoute | None] = {None: None}  # the default endpoints
        self._ambiguous: set[str | None] = set()  # names seen with two routes (two credential profiles)

    async def lane(self, route: RegionRoute | None) -> Lane:
        found = self._lanes.get(route)
        if found is None:
            found = self._build(await self._regions.clients(route))
            self._lanes[route] = found
            name = route.name if route else None
            if self._routes.get(name, route) != route:
                self._ambiguous.add(name)
            self._routes[name] = route
        return found

    def known(self, region: str | None) -> bool:
        """Whether a batch of this region ran here (assisting needs its route, which only the message has),
        with one route only: a region whose batches sign with several profiles is not assisted, as the
        name alone cannot say which profile a batch of another replica needs."""
        return region in self._routes and region not in self._ambiguous

    async def lane_of(self, region: str | None) -> Lane:
        return await self.lane(self._routes[region])

    def _build(self, clients: RegionClients) -> Lane:
        options = self._options
        budget = self._budgets.setdefault(clients.key, asyncio.Semaphore(options.concurrency))
        return Lane(
            planner=Planner(clients.dli, self._ledger, self._clock, max_jobs=options.max_jobs_per_batch),
            export=ExportStage(clients.dli, self._ledger, self._clock, budget),
            verify=VerifyStage(
                clients.store,
                self._ledger,
                self._clock,
                grace=options.verify_grace_seconds,
                deep=options.verify_zip,
                concurrency=options.verify_concurrency,
            ),
            finisher=Finisher(
                self._ledger,
                clients.store,
                self._reports,
                upload=options.upload_manifest,
                clock=self._clock,
                migrations=self._migrations,
            ),
            store=clients.store,
            clients=clients,
        )
