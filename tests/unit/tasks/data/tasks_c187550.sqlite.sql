-- A task database as the code at commit c187550 left it (orch_tasks, orch_sessions, orch_allocation, orch_holds), with rows.
-- Captured once from that commit's table definitions (store.py and allocation/control.py):
-- its TaskStore created the tables (create_all), AllocationOverrides added orch_allocation,
-- and the rows came from TaskStore.add/claim/finish/save_session/hold. The test suite loads
-- it to check the upgrade of a database made before the schema had migrations.
BEGIN TRANSACTION;
CREATE TABLE orch_allocation (
	"key" VARCHAR(128) NOT NULL, 
	value INTEGER NOT NULL, 
	PRIMARY KEY ("key")
);
INSERT INTO "orch_allocation" VALUES('slots',3);
CREATE TABLE orch_holds (
	name VARCHAR(255) NOT NULL, 
	fingerprint VARCHAR(64) NOT NULL, 
	reason TEXT NOT NULL, 
	task_id VARCHAR(32), 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (name)
);
INSERT INTO "orch_holds" VALUES('profile:codex','fp1','quota exhausted','tmx1aef8syiph','2026-11-29 03:36:02.483065');
CREATE TABLE orch_sessions (
	project VARCHAR(63) NOT NULL, 
	profile VARCHAR(63) NOT NULL, 
	session_id VARCHAR(255) NOT NULL, 
	task_id VARCHAR(32), 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (project, profile)
);
INSERT INTO "orch_sessions" VALUES('alpha','codex','sess-1','tmx1aef8syiph','2026-11-29 03:36:02.481994');
CREATE TABLE orch_tasks (
	id VARCHAR(32) NOT NULL, 
	project VARCHAR(63) NOT NULL, 
	prompt TEXT NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	priority INTEGER NOT NULL, 
	reason TEXT, 
	"after" TEXT NOT NULL, 
	profile VARCHAR(63), 
	source VARCHAR(32) NOT NULL, 
	source_key VARCHAR(512), 
	session VARCHAR(63), 
	dispatched BOOLEAN NOT NULL, 
	attempts INTEGER NOT NULL, 
	run_id VARCHAR(64), 
	branch VARCHAR(255), 
	"commit" VARCHAR(64), 
	session_id VARCHAR(255), 
	cost_usd FLOAT, 
	duration_s FLOAT, 
	tokens_in INTEGER, 
	tokens_out INTEGER, 
	turns INTEGER, 
	summary TEXT, 
	extra TEXT NOT NULL, 
	created_at DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	started_at DATETIME, 
	finished_at DATETIME, 
	PRIMARY KEY (id), 
	UNIQUE (source_key)
);
INSERT INTO "orch_tasks" VALUES('tmx1aef8syiph','alpha','Fix the bug','succeeded',70,NULL,'[]','codex','agent-os','agent-os:alpha:tasks.md:1','s1',1,1,'run-1','orch/alpha/x','abc123',NULL,0.5,NULL,10,20,3,'done','{"files_changed": 2}','2026-11-29 03:36:02.476114','2026-11-29 03:36:02.480470','2026-11-29 03:36:02.479304','2026-11-29 03:36:02.480399');
INSERT INTO "orch_tasks" VALUES('tmx1aef8xncf9','beta','Queued work','queued',50,NULL,'["tmx1aef8syiph"]',NULL,'cli',NULL,NULL,0,0,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,NULL,'{}','2026-11-29 03:36:02.481416','2026-11-29 03:36:02.481416',NULL,NULL);
CREATE INDEX ix_orch_tasks_project ON orch_tasks (project);
CREATE INDEX ix_orch_tasks_session ON orch_tasks (session);
CREATE INDEX ix_orch_tasks_status ON orch_tasks (status);
COMMIT;
