-- procfwk metadata schema, version 1: the tables and reporting views of procfwk master, with the same
-- names and columns, so existing procfwk databases, users' own SQL and reports keep working.
-- Idempotent: every object is created only when no object of that name exists, of *any* type (procfwk
-- master keeps CurrentExecutionSummary, CompleteExecutionLog, LastExecution … as synonyms of its
-- procfwkReporting views, which a guard on type 'V' would miss); safe on an existing procfwk database.
-- Run by `procfwk db init` (or sqlcmd / a deployment pipeline), one batch per GO. Each batch is one guard
-- line `IF <condition>` and the change on the lines after it (`db upgrade --dry-run` lists the changes
-- whose guard holds).

IF SCHEMA_ID(N'procfwk') IS NULL
EXEC (N'CREATE SCHEMA [procfwk]');
GO

IF OBJECT_ID(N'[procfwk].[SchemaVersion]') IS NULL
CREATE TABLE [procfwk].[SchemaVersion] (
    [Version] INT NOT NULL PRIMARY KEY,
    [Description] NVARCHAR(400) NOT NULL,
    [AppliedDateTime] DATETIME NOT NULL DEFAULT GETUTCDATE()
);
GO

IF OBJECT_ID(N'[procfwk].[Tenants]') IS NULL
CREATE TABLE [procfwk].[Tenants] (
    [TenantId] UNIQUEIDENTIFIER NOT NULL PRIMARY KEY,
    [Name] NVARCHAR(200) NOT NULL,
    [Description] NVARCHAR(MAX) NULL
);
GO

IF OBJECT_ID(N'[procfwk].[Subscriptions]') IS NULL
CREATE TABLE [procfwk].[Subscriptions] (
    [SubscriptionId] UNIQUEIDENTIFIER NOT NULL PRIMARY KEY,
    [Name] NVARCHAR(200) NOT NULL,
    [Description] NVARCHAR(MAX) NULL,
    [TenantId] UNIQUEIDENTIFIER NOT NULL REFERENCES [procfwk].[Tenants] ([TenantId])
);
GO

IF OBJECT_ID(N'[procfwk].[Orchestrators]') IS NULL
CREATE TABLE [procfwk].[Orchestrators] (
    [OrchestratorId] INT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    [OrchestratorName] NVARCHAR(200) NOT NULL,
    [OrchestratorType] CHAR(3) NOT NULL CHECK ([OrchestratorType] IN ('ADF', 'SYN')),
    [IsFrameworkOrchestrator] BIT NOT NULL DEFAULT 0,
    [ResourceGroupName] NVARCHAR(200) NOT NULL,
    [SubscriptionId] UNIQUEIDENTIFIER NOT NULL REFERENCES [procfwk].[Subscriptions] ([SubscriptionId]),
    [Description] NVARCHAR(MAX) NULL
);
GO

IF OBJECT_ID(N'[procfwk].[Stages]') IS NULL
CREATE TABLE [procfwk].[Stages] (
    [StageId] INT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    [StageName] VARCHAR(225) NOT NULL,
    [StageDescription] VARCHAR(4000) NULL,
    [Enabled] BIT NOT NULL DEFAULT 1
);
GO

IF OBJECT_ID(N'[procfwk].[Pipelines]') IS NULL
CREATE TABLE [procfwk].[Pipelines] (
    [PipelineId] INT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    [OrchestratorId] INT NOT NULL REFERENCES [procfwk].[Orchestrators] ([OrchestratorId]),
    [StageId] INT NOT NULL REFERENCES [procfwk].[Stages] ([StageId]),
    [PipelineName] NVARCHAR(200) NOT NULL,
    [LogicalPredecessorId] INT NULL REFERENCES [procfwk].[Pipelines] ([PipelineId]),
    [Enabled] BIT NOT NULL DEFAULT 1
);
GO

IF OBJECT_ID(N'[procfwk].[PipelineParameters]') IS NULL
CREATE TABLE [procfwk].[PipelineParameters] (
    [ParameterId] INT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    [PipelineId] INT NOT NULL REFERENCES [procfwk].[Pipelines] ([PipelineId]),
    [ParameterName] VARCHAR(128) NOT NULL,
    [ParameterValue] NVARCHAR(MAX) NULL,
    [ParameterValueLastUsed] NVARCHAR(MAX) NULL
);
GO

IF OBJECT_ID(N'[procfwk].[PipelineDependencies]') IS NULL
CREATE TABLE [procfwk].[PipelineDependencies] (
    [DependencyId] INT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    [PipelineId] INT NOT NULL REFERENCES [procfwk].[Pipelines] ([PipelineId]),
    [DependantPipelineId] INT NOT NULL REFERENCES [procfwk].[Pipelines] ([PipelineId]),
    CONSTRAINT [UK_PipelinesToDependantPipelines] UNIQUE ([PipelineId], [DependantPipelineId]),
    CONSTRAINT [CK_PipelineDependencies] CHECK ([PipelineId] <> [DependantPipelineId])
);
GO

IF OBJECT_ID(N'[procfwk].[Properties]') IS NULL
CREATE TABLE [procfwk].[Properties] (
    [PropertyId] INT IDENTITY(1,1) NOT NULL,
    [PropertyName] VARCHAR(128) NOT NULL,
    [PropertyValue] NVARCHAR(MAX) NOT NULL,
    [Description] NVARCHAR(MAX) NULL,
    [ValidFrom] DATETIME NOT NULL DEFAULT GETDATE(),
    [ValidTo] DATETIME NULL,
    CONSTRAINT [PK_Properties] PRIMARY KEY ([PropertyId], [PropertyName])
);
GO

-- Service principals. An existing procfwk database keeps them in [dbo].[ServicePrincipals]: a view over
-- it lets the Function App read the same rows; otherwise create the table with the same columns.
-- The Function App reads PrincipalId / PrincipalIdUrl / PrincipalSecretUrl (Key Vault references); it never
-- stores or decrypts a plain secret (PrincipalSecret is kept only for compatibility).
IF OBJECT_ID(N'[procfwk].[ServicePrincipals]') IS NULL AND OBJECT_ID(N'[dbo].[ServicePrincipals]') IS NOT NULL
EXEC (N'CREATE VIEW [procfwk].[ServicePrincipals] AS
SELECT [CredentialId], [PrincipalName], [PrincipalId], [PrincipalSecret], [PrincipalIdUrl], [PrincipalSecretUrl]
FROM [dbo].[ServicePrincipals]');
GO

IF OBJECT_ID(N'[procfwk].[ServicePrincipals]') IS NULL
CREATE TABLE [procfwk].[ServicePrincipals] (
    [CredentialId] INT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    [PrincipalName] NVARCHAR(256) NULL,
    [PrincipalId] UNIQUEIDENTIFIER NULL,
    [PrincipalSecret] VARBINARY(256) NULL,
    [PrincipalIdUrl] NVARCHAR(MAX) NULL,
    [PrincipalSecretUrl] NVARCHAR(MAX) NULL
);
GO

IF OBJECT_ID(N'[procfwk].[PipelineAuthLink]') IS NULL
CREATE TABLE [procfwk].[PipelineAuthLink] (
    [AuthId] INT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    [PipelineId] INT NULL REFERENCES [procfwk].[Pipelines] ([PipelineId]),
    [OrchestratorId] INT NOT NULL REFERENCES [procfwk].[Orchestrators] ([OrchestratorId]),
    [CredentialId] INT NOT NULL
);
GO

IF OBJECT_ID(N'[procfwk].[Batches]') IS NULL
CREATE TABLE [procfwk].[Batches] (
    [BatchId] UNIQUEIDENTIFIER NOT NULL DEFAULT NEWID() PRIMARY KEY,
    [BatchName] VARCHAR(255) NOT NULL,
    [BatchDescription] VARCHAR(4000) NULL,
    [Enabled] BIT NOT NULL DEFAULT 0
);
GO

IF OBJECT_ID(N'[procfwk].[BatchStageLink]') IS NULL
CREATE TABLE [procfwk].[BatchStageLink] (
    [BatchId] UNIQUEIDENTIFIER NOT NULL REFERENCES [procfwk].[Batches] ([BatchId]),
    [StageId] INT NOT NULL REFERENCES [procfwk].[Stages] ([StageId]),
    CONSTRAINT [PK_BatchStageLink] PRIMARY KEY ([BatchId], [StageId])
);
GO

IF OBJECT_ID(N'[procfwk].[BatchExecution]') IS NULL
CREATE TABLE [procfwk].[BatchExecution] (
    [BatchId] UNIQUEIDENTIFIER NOT NULL,
    [ExecutionId] UNIQUEIDENTIFIER NOT NULL,
    [BatchName] VARCHAR(255) NOT NULL,
    [BatchStatus] NVARCHAR(200) NOT NULL,
    [StartDateTime] DATETIME NOT NULL,
    [EndDateTime] DATETIME NULL,
    CONSTRAINT [PK_BatchExecution] PRIMARY KEY ([BatchId], [ExecutionId])
);
GO

IF OBJECT_ID(N'[procfwk].[CurrentExecution]') IS NULL
CREATE TABLE [procfwk].[CurrentExecution] (
    [LocalExecutionId] UNIQUEIDENTIFIER NOT NULL,
    [StageId] INT NOT NULL,
    [PipelineId] INT NOT NULL,
    [CallingOrchestratorName] NVARCHAR(200) NOT NULL,
    [ResourceGroupName] NVARCHAR(200) NOT NULL,
    [OrchestratorType] CHAR(3) NOT NULL,
    [OrchestratorName] NVARCHAR(200) NOT NULL,
    [PipelineName] NVARCHAR(200) NOT NULL,
    [StartDateTime] DATETIME NULL,
    [PipelineStatus] NVARCHAR(200) NULL,
    [LastStatusCheckDateTime] DATETIME NULL,
    [EndDateTime] DATETIME NULL,
    [IsBlocked] BIT NOT NULL DEFAULT 0,
    [PipelineRunId] UNIQUEIDENTIFIER NULL,
    [PipelineParamsUsed] NVARCHAR(MAX) NULL,
    CONSTRAINT [PK_CurrentExecution] PRIMARY KEY ([LocalExecutionId], [StageId], [PipelineId])
);
GO

IF OBJECT_ID(N'[procfwk].[ExecutionLog]') IS NULL
CREATE TABLE [procfwk].[ExecutionLog] (
    [LogId] INT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    [LocalExecutionId] UNIQUEIDENTIFIER NOT NULL,
    [StageId] INT NOT NULL,
    [PipelineId] INT NOT NULL,
    [CallingOrchestratorName] NVARCHAR(200) NOT NULL DEFAULT 'Unknown',
    [ResourceGroupName] NVARCHAR(200) NOT NULL DEFAULT 'Unknown',
    [OrchestratorType] CHAR(3) NOT NULL DEFAULT 'N/A',
    [OrchestratorName] NVARCHAR(200) NOT NULL DEFAULT 'Unknown',
    [PipelineName] NVARCHAR(200) NOT NULL,
    [StartDateTime] DATETIME NULL,
    [PipelineStatus] NVARCHAR(200) NULL,
    [EndDateTime] DATETIME NULL,
    [PipelineRunId] UNIQUEIDENTIFIER NULL,
    [PipelineParamsUsed] NVARCHAR(MAX) NULL DEFAULT 'None'
);
GO

IF OBJECT_ID(N'[procfwk].[ErrorLog]') IS NULL
CREATE TABLE [procfwk].[ErrorLog] (
    [LogId] INT IDENTITY(1,1) NOT NULL PRIMARY KEY,
    [LocalExecutionId] UNIQUEIDENTIFIER NOT NULL,
    [PipelineRunId] UNIQUEIDENTIFIER NOT NULL,
    [ActivityRunId] UNIQUEIDENTIFIER NOT NULL,
    [ActivityName] VARCHAR(100) NOT NULL,
    [ActivityType] VARCHAR(100) NOT NULL,
    [ErrorCode] VARCHAR(100) NOT NULL,
    [ErrorType] VARCHAR(100) NOT NULL,
    [ErrorMessage] NVARCHAR(MAX) NULL
);
GO

-- Ours: who runs an execution scope (all stages, or one batch) right now, so two Parents cannot run the
-- same scope at once, and a Parent that died does not block the next one for ever.
IF OBJECT_ID(N'[procfwk].[ExecutionControl]') IS NULL
CREATE TABLE [procfwk].[ExecutionControl] (
    [ControlKey] NVARCHAR(300) NOT NULL PRIMARY KEY,
    [ExecutionId] UNIQUEIDENTIFIER NOT NULL,
    [ControlStatus] NVARCHAR(50) NOT NULL,
    [StartedDateTime] DATETIME NOT NULL,
    [LastActivityDateTime] DATETIME NOT NULL,
    [ParentRunId] NVARCHAR(100) NULL,
    [CallingOrchestratorName] NVARCHAR(200) NULL
);
GO

IF OBJECT_ID(N'[procfwk].[CurrentProperties]') IS NULL
EXEC (N'CREATE VIEW [procfwk].[CurrentProperties] AS
SELECT [PropertyName], [PropertyValue] FROM [procfwk].[Properties] WHERE [ValidTo] IS NULL');
GO

IF OBJECT_ID(N'[procfwk].[CurrentExecutionSummary]') IS NULL
EXEC (N'CREATE VIEW [procfwk].[CurrentExecutionSummary] AS
SELECT ISNULL([PipelineStatus], ''Not Started'') AS [PipelineStatus], COUNT(0) AS [RecordCount]
FROM [procfwk].[CurrentExecution]
GROUP BY [PipelineStatus]');
GO

IF OBJECT_ID(N'[procfwk].[CompleteExecutionLog]') IS NULL
EXEC (N'CREATE VIEW [procfwk].[CompleteExecutionLog] AS
SELECT [LogId], [LocalExecutionId], [StageId], [PipelineId], [CallingOrchestratorName], [ResourceGroupName],
       [OrchestratorType], [OrchestratorName], [PipelineName], [StartDateTime], [PipelineStatus], [EndDateTime],
       [PipelineRunId], [PipelineParamsUsed],
       DATEDIFF(MINUTE, [StartDateTime], [EndDateTime]) AS [RunDurationMinutes]
FROM [procfwk].[ExecutionLog]');
GO

IF OBJECT_ID(N'[procfwk].[LastExecution]') IS NULL
EXEC (N'CREATE VIEW [procfwk].[LastExecution] AS
SELECT [LogId], [StageId], [PipelineId], [PipelineName], [StartDateTime], [PipelineStatus], [EndDateTime],
       DATEDIFF(MINUTE, [StartDateTime], [EndDateTime]) AS [RunDurationMinutes]
FROM [procfwk].[ExecutionLog]
WHERE [LocalExecutionId] = (
    SELECT [LocalExecutionId] FROM [procfwk].[ExecutionLog]
    WHERE [LogId] = (SELECT MAX([LogId]) FROM [procfwk].[ExecutionLog] WHERE [EndDateTime] IS NOT NULL))');
GO

IF NOT EXISTS (SELECT 1 FROM [procfwk].[SchemaVersion] WHERE [Version] = 1)
INSERT INTO [procfwk].[SchemaVersion] ([Version], [Description]) VALUES (1, N'procfwk master tables and reporting views');
GO
