CREATE TABLE "concord_migrations" (
	"tag" varchar(128) PRIMARY KEY NOT NULL,
	"breaking" boolean NOT NULL,
	"applied_by" varchar(64) NOT NULL,
	"applied_at" timestamp with time zone DEFAULT now() NOT NULL
);
