-- procfwk metadata schema, version 5: run links. Each worker's run keeps the portal page where a user looks
-- at it (ADF Studio or Synapse Studio), recorded with its run id and copied to the log with it, so a failure
-- in ExecutionLog is one click from the run.
-- Idempotent: columns are added only when missing (procfwk master's tables have neither).

IF COL_LENGTH(N'procfwk.CurrentExecution', N'RunLink') IS NULL
ALTER TABLE [procfwk].[CurrentExecution] ADD [RunLink] NVARCHAR(1000) NULL;
GO

IF COL_LENGTH(N'procfwk.ExecutionLog', N'RunLink') IS NULL
ALTER TABLE [procfwk].[ExecutionLog] ADD [RunLink] NVARCHAR(1000) NULL;
GO

IF NOT EXISTS (SELECT 1 FROM [procfwk].[SchemaVersion] WHERE [Version] = 5)
INSERT INTO [procfwk].[SchemaVersion] ([Version], [Description]) VALUES (5, N'run links (RunLink) in CurrentExecution and ExecutionLog');
GO
