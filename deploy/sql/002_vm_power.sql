-- procfwk metadata schema, version 2: VmPower. Pools of self-hosted integration runtime VMs, the leases that
-- keep them allocated, and the log of every lease and power decision (read by `procfwk vm report`).
-- Idempotent: every object is created only when missing. Run by `procfwk db init`, one batch per GO.

IF OBJECT_ID(N'[procfwk].[VmPools]') IS NULL
CREATE TABLE [procfwk].[VmPools] (
    [PoolKey] NVARCHAR(400) NOT NULL PRIMARY KEY,
    [SubscriptionId] UNIQUEIDENTIFIER NOT NULL,
    [ResourceGroupName] NVARCHAR(200) NOT NULL,
    [FactoryName] NVARCHAR(200) NULL,
    [FactoryResourceGroupName] NVARCHAR(200) NULL,
    [IntegrationRuntimeName] NVARCHAR(200) NULL,
    [JobsPerNode] INT NOT NULL,
    [MinNodes] INT NOT NULL,
    [GraceSeconds] INT NOT NULL,
    [LastLeaseEndDateTime] DATETIME NULL,
    [Version] BIGINT NOT NULL DEFAULT 0,
    [CreatedDateTime] DATETIME NOT NULL,
    [LastDecisionDateTime] DATETIME NOT NULL
);
GO

IF OBJECT_ID(N'[procfwk].[VmPoolNodes]') IS NULL
CREATE TABLE [procfwk].[VmPoolNodes] (
    [PoolKey] NVARCHAR(400) NOT NULL REFERENCES [procfwk].[VmPools] ([PoolKey]),
    [NodeIndex] INT NOT NULL,
    [VmKey] NVARCHAR(400) NOT NULL UNIQUE,
    [VmName] NVARCHAR(200) NOT NULL,
    [PendingAction] NVARCHAR(20) NULL,
    [PendingSinceDateTime] DATETIME NULL,
    [PendingOperationUrl] NVARCHAR(2000) NULL,
    [IdleSinceDateTime] DATETIME NULL,
    [LastPowerState] NVARCHAR(20) NULL,
    [LastObservedDateTime] DATETIME NULL,
    PRIMARY KEY ([PoolKey], [NodeIndex])
);
GO

IF OBJECT_ID(N'[procfwk].[VmLeases]') IS NULL
CREATE TABLE [procfwk].[VmLeases] (
    [PoolKey] NVARCHAR(400) NOT NULL REFERENCES [procfwk].[VmPools] ([PoolKey]),
    [Holder] NVARCHAR(200) NOT NULL,
    [AcquiredDateTime] DATETIME NOT NULL,
    [RenewedDateTime] DATETIME NOT NULL,
    [ExpiresDateTime] DATETIME NOT NULL,
    PRIMARY KEY ([PoolKey], [Holder])
);
GO

IF OBJECT_ID(N'[procfwk].[VmPowerLog]') IS NULL
CREATE TABLE [procfwk].[VmPowerLog] (
    [LogId] INT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    [PoolKey] NVARCHAR(400) NOT NULL,
    [VmName] NVARCHAR(200) NULL,
    [EventDateTime] DATETIME NOT NULL,
    [Event] NVARCHAR(50) NOT NULL,
    [Holder] NVARCHAR(200) NULL,
    [PowerState] NVARCHAR(20) NULL,
    [ActiveLeases] INT NOT NULL,
    [Detail] NVARCHAR(4000) NULL
);
GO

-- Which workers need a self-hosted runtime: one row per worker (PipelineId) or per orchestrator
-- (OrchestratorId, for all its workers); a worker's own row wins. VmNames: the node VMs, comma-separated.
IF OBJECT_ID(N'[procfwk].[WorkerRuntimes]') IS NULL
CREATE TABLE [procfwk].[WorkerRuntimes] (
    [LinkId] INT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    [PipelineId] INT NULL REFERENCES [procfwk].[Pipelines] ([PipelineId]),
    [OrchestratorId] INT NULL REFERENCES [procfwk].[Orchestrators] ([OrchestratorId]),
    [SubscriptionId] UNIQUEIDENTIFIER NOT NULL,
    [ResourceGroupName] NVARCHAR(200) NOT NULL,
    [VmNames] NVARCHAR(1000) NOT NULL,
    [FactoryName] NVARCHAR(200) NULL,
    [FactoryResourceGroupName] NVARCHAR(200) NULL,
    [IntegrationRuntimeName] NVARCHAR(200) NULL,
    [JobsPerNode] INT NULL,
    [MinNodes] INT NULL,
    [LeaseSeconds] INT NULL,
    [GraceSeconds] INT NULL,
    CHECK ([PipelineId] IS NOT NULL OR [OrchestratorId] IS NOT NULL)
);
GO

IF NOT EXISTS (SELECT 1 FROM [procfwk].[SchemaVersion] WHERE [Version] = 2)
INSERT INTO [procfwk].[SchemaVersion] ([Version], [Description]) VALUES (2, N'VmPower pools, leases and power log');
GO
