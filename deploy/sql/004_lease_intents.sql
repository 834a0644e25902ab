-- procfwk metadata schema, version 4: lease intents. What a holder asked of a VM pool while another
-- decision held the pool's lock, recorded without that lock: a `Take` (the next decision under the lock
-- turns it into a lease) or a `Release` (the holder's stop; kept for an hour so that a start the holder
-- sent earlier, still on its way, does not take a lease after the stop). Only a decision under the pool's
-- lock writes VmLeases rows, so a decision that deallocates has seen every lease.
-- No foreign key to VmPools: SQL Server checks a foreign key with a shared lock on the parent row even under
-- READ_COMMITTED_SNAPSHOT, and the decision holding the pool has that row locked, so an intent could not be
-- recorded while the pool is busy, which is when intents are recorded.
-- Idempotent: the table is created only when missing.

IF OBJECT_ID(N'[procfwk].[VmLeaseIntents]') IS NULL
CREATE TABLE [procfwk].[VmLeaseIntents] (
    [PoolKey] NVARCHAR(400) NOT NULL,
    [Holder] NVARCHAR(200) NOT NULL,
    [Intent] NVARCHAR(10) NOT NULL CHECK ([Intent] IN (N'Take', N'Release')),
    [IntentDateTime] DATETIME2 NOT NULL,
    [LeaseSeconds] INT NULL,
    PRIMARY KEY ([PoolKey], [Holder])
);
GO

IF NOT EXISTS (SELECT 1 FROM [procfwk].[SchemaVersion] WHERE [Version] = 4)
INSERT INTO [procfwk].[SchemaVersion] ([Version], [Description]) VALUES (4, N'VmPower lease intents recorded while a pool is busy');
GO
