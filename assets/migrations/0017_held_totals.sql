-- What tenants hold of their quota and clusters of their capacity, kept as running totals
-- (issue 13). Admission summed every live `quota` and `capacity` row of a tenant or cluster
-- on each claim that looked at a queued request, and the console summed every tenant's
-- on each change to a request: at 100,000 nodes about 10 ms a sum, on every commit while a
-- request waited for admission. The triggers below keep one row per tenant (`quota`) and
-- per cluster (`capacity`), in the same transaction as the resource rows they count.
CREATE TABLE held_totals (
    kind       TEXT NOT NULL,          -- quota (owner: the tenant) | capacity (owner: the cluster)
    owner      TEXT NOT NULL,
    units      INTEGER NOT NULL,       -- live rows
    cpu        INTEGER NOT NULL,
    memory_gb  INTEGER NOT NULL,
    storage_gb INTEGER NOT NULL,
    PRIMARY KEY (kind, owner)
) WITHOUT ROWID;

INSERT INTO held_totals (kind, owner, units, cpu, memory_gb, storage_gb)
    SELECT 'quota', tenant, COUNT(*), SUM(cpu), SUM(memory_gb), SUM(storage_gb)
    FROM resources WHERE kind = 'quota' AND status <> 'released' GROUP BY tenant;
INSERT INTO held_totals (kind, owner, units, cpu, memory_gb, storage_gb)
    SELECT 'capacity', cluster, COUNT(*), SUM(cpu), SUM(memory_gb), SUM(storage_gb)
    FROM resources WHERE kind = 'capacity' AND status <> 'released' AND cluster IS NOT NULL
    GROUP BY cluster;

-- A row counts while it is live (not released), under its kind's owner: the tenant for
-- quota, the cluster for capacity (a capacity row without a cluster counts nowhere, as
-- no sum ever found it).
CREATE TRIGGER held_totals_insert AFTER INSERT ON resources
WHEN NEW.kind IN ('quota', 'capacity') AND NEW.status <> 'released'
 AND (CASE NEW.kind WHEN 'quota' THEN NEW.tenant ELSE NEW.cluster END) IS NOT NULL BEGIN
    INSERT OR IGNORE INTO held_totals VALUES
        (NEW.kind, CASE NEW.kind WHEN 'quota' THEN NEW.tenant ELSE NEW.cluster END, 0, 0, 0, 0);
    UPDATE held_totals SET units = units + 1, cpu = cpu + NEW.cpu,
        memory_gb = memory_gb + NEW.memory_gb, storage_gb = storage_gb + NEW.storage_gb
    WHERE kind = NEW.kind AND owner = CASE NEW.kind WHEN 'quota' THEN NEW.tenant ELSE NEW.cluster END;
END;

CREATE TRIGGER held_totals_delete AFTER DELETE ON resources
WHEN OLD.kind IN ('quota', 'capacity') AND OLD.status <> 'released' BEGIN
    UPDATE held_totals SET units = units - 1, cpu = cpu - OLD.cpu,
        memory_gb = memory_gb - OLD.memory_gb, storage_gb = storage_gb - OLD.storage_gb
    WHERE kind = OLD.kind AND owner = CASE OLD.kind WHEN 'quota' THEN OLD.tenant ELSE OLD.cluster END;
END;

-- An update takes the old row out and puts the new one in (a release, a resize, a move).
CREATE TRIGGER held_totals_update AFTER UPDATE OF kind, status, tenant, cluster, cpu, memory_gb, storage_gb
ON resources
WHEN OLD.kind IN ('quota', 'capacity') OR NEW.kind IN ('quota', 'capacity') BEGIN
    UPDATE held_totals SET units = units - 1, cpu = cpu - OLD.cpu,
        memory_gb = memory_gb - OLD.memory_gb, storage_gb = storage_gb - OLD.storage_gb
    WHERE OLD.kind IN ('quota', 'capacity') AND OLD.status <> 'released'
      AND kind = OLD.kind AND owner = CASE OLD.kind WHEN 'quota' THEN OLD.tenant ELSE OLD.cluster END;
    INSERT OR IGNORE INTO held_totals
        SELECT NEW.kind, CASE NEW.kind WHEN 'quota' THEN NEW.tenant ELSE NEW.cluster END, 0, 0, 0, 0
        WHERE NEW.kind IN ('quota', 'capacity') AND NEW.status <> 'released'
          AND (CASE NEW.kind WHEN 'quota' THEN NEW.tenant ELSE NEW.cluster END) IS NOT NULL;
    UPDATE held_totals SET units = units + 1, cpu = cpu + NEW.cpu,
        memory_gb = memory_gb + NEW.memory_gb, storage_gb = storage_gb + NEW.storage_gb
    WHERE NEW.kind IN ('quota', 'capacity') AND NEW.status <> 'released'
      AND kind = NEW.kind AND owner = CASE NEW.kind WHEN 'quota' THEN NEW.tenant ELSE NEW.cluster END;
END;

-- Nothing reads these sums from `resources` any more.
DROP INDEX resources_quota_held;
DROP INDEX resources_capacity_held;
