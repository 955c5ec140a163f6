@echo off
rem deploy-multi.bat: the Discord bot cluster on Windows, through Docker Compose
rem (Docker Desktop). The same subcommands as deploy/deploy-multi.sh in its
rem compose mode; the native mode and the sandbox need Linux (or WSL).
rem
rem   deploy\deploy-multi.bat                 a numbered menu
rem   deploy\deploy-multi.bat start           create .env.multi if missing, up -d
rem   deploy\deploy-multi.bat stop            stop the containers (they drain first)
rem   deploy\deploy-multi.bat restart
rem   deploy\deploy-multi.bat status          containers and their /health
rem   deploy\deploy-multi.bat health          exit 1 unless all four /health answer
rem   deploy\deploy-multi.bat logs [chat]     follow the logs (all, or one service)
rem   deploy\deploy-multi.bat update          git pull, build, recreate one bot at a time
rem   deploy\deploy-multi.bat backup          PostgreSQL dump + Valkey snapshot + .env.multi
rem                                           into backups\<timestamp>\
rem
rem Everything: docs\deploy.md.
setlocal EnableExtensions EnableDelayedExpansion
cd /d "%~dp0.."
set "COMPOSE_FILE=compose\docker-compose.multi.yml"
set "DC=docker compose -p discordbot --env-file .env.multi -f %COMPOSE_FILE%"

where docker >nul 2>&1
if errorlevel 1 (
    echo Docker is not installed: install Docker Desktop from https://www.docker.com/products/docker-desktop/
    exit /b 1
)
docker compose version >nul 2>&1
if errorlevel 1 (
    echo "docker compose" does not work: update Docker Desktop ^(Compose v2 is part of it^).
    exit /b 1
)
docker info >nul 2>&1
if errorlevel 1 (
    echo The Docker engine is not running: start Docker Desktop and try again.
    exit /b 1
)
if not exist "%COMPOSE_FILE%" (
    echo %COMPOSE_FILE% is missing: run this from a complete checkout.
    exit /b 1
)
if not exist .env.multi (
    copy /y .env.multi.example .env.multi >nul
    echo Created .env.multi from the example. Put your keys in it ^(DISCORD_TOKEN, OPENAI_API_KEY_1 ...^),
    echo empty the lines of keys you do not have ^(KEY=^), set POSTGRES_PASSWORD, then run start again.
    notepad .env.multi
    exit /b 1
)

rem Health ports as deploy-multi.sh takes them: <ROLE>_HEALTH_PORT from the
rem environment, else from .env.multi (its last line), else 8001-8004.
for %%r in (CHAT IMAGE VIDEO ADMIN) do if defined %%r_HEALTH_PORT set "ENV_%%r_HEALTH_PORT=1"
for /f "usebackq eol=# tokens=1,* delims==" %%a in (".env.multi") do (
    for %%r in (CHAT IMAGE VIDEO ADMIN) do (
        if /i "%%a"=="%%r_HEALTH_PORT" if not defined ENV_%%r_HEALTH_PORT set "%%r_HEALTH_PORT=%%b"
    )
)
if not defined CHAT_HEALTH_PORT set "CHAT_HEALTH_PORT=8001"
if not defined IMAGE_HEALTH_PORT set "IMAGE_HEALTH_PORT=8002"
if not defined VIDEO_HEALTH_PORT set "VIDEO_HEALTH_PORT=8003"
if not defined ADMIN_HEALTH_PORT set "ADMIN_HEALTH_PORT=8004"
set "PORTS=%CHAT_HEALTH_PORT% %IMAGE_HEALTH_PORT% %VIDEO_HEALTH_PORT% %ADMIN_HEALTH_PORT%"

set "CMD=%~1"
if "%CMD%"=="" goto menu
call :run %*
exit /b %errorlevel%

:menu
echo.
echo Discord bot cluster ^(Docker Compose^)
echo   1^) start     2^) stop      3^) restart
echo   4^) status    5^) logs      6^) health
echo   7^) update    8^) backup    0^) quit
set "CHOICE="
set /p "CHOICE=choice: "
if "%CHOICE%"=="0" exit /b 0
if "%CHOICE%"=="1" call :run start
if "%CHOICE%"=="2" call :run stop
if "%CHOICE%"=="3" call :run restart
if "%CHOICE%"=="4" call :run status
if "%CHOICE%"=="5" call :run logs
if "%CHOICE%"=="6" call :run health
if "%CHOICE%"=="7" call :run update
if "%CHOICE%"=="8" call :run backup
goto menu

:run
set "SUB=%~1"
if /i "%SUB%"=="start" goto do_start
if /i "%SUB%"=="stop" goto do_stop
if /i "%SUB%"=="restart" goto do_restart
if /i "%SUB%"=="status" goto do_status
if /i "%SUB%"=="health" goto do_health
if /i "%SUB%"=="logs" goto do_logs
if /i "%SUB%"=="update" goto do_update
if /i "%SUB%"=="backup" goto do_backup
if /i "%SUB%"=="help" goto do_help
echo unknown command: %SUB%
goto do_help_fail

:do_help
echo usage: deploy\deploy-multi.bat [start^|stop^|restart^|status^|health^|logs [service]^|update^|backup]
echo ^(cleanup, restore, try and chaos: deploy/deploy-multi.sh --compose, e.g. in WSL; see docs\deploy.md^)
exit /b 0
:do_help_fail
echo usage: deploy\deploy-multi.bat [start^|stop^|restart^|status^|health^|logs [service]^|update^|backup]
exit /b 2

:do_start
findstr /r /c:"^[A-Z_0-9]*=your[-_]" /c:"^[A-Z_0-9]*=sk-your-" .env.multi >nul
if not errorlevel 1 (
    echo .env.multi still has example values ^(the instances would refuse to start^):
    for /f "tokens=1 delims==" %%k in ('findstr /r /c:"^[A-Z_0-9]*=your[-_]" /c:"^[A-Z_0-9]*=sk-your-" .env.multi') do echo   %%k
    echo Put the real value in, or empty the line ^(KEY=^) to turn that feature off.
    exit /b 2
)
%DC% up -d
if errorlevel 1 exit /b 1
goto do_status

:do_stop
rem the bots drain for up to DRAIN_TIMEOUT_SEC (30) on SIGTERM
%DC% stop -t 45
exit /b %errorlevel%

:do_restart
%DC% stop -t 45
goto do_start

:do_status
%DC% ps
for %%p in (%PORTS%) do (
    curl -s --max-time 2 http://127.0.0.1:%%p/health
    echo.
)
exit /b 0

:do_health
set "DOWN=0"
for %%p in (%PORTS%) do (
    curl -s -f -o nul --max-time 2 http://127.0.0.1:%%p/health
    if errorlevel 1 (
        echo port %%p: no healthy answer
        set "DOWN=1"
    ) else (
        echo port %%p: ok
    )
)
exit /b !DOWN!

:do_logs
if "%~2"=="" (
    %DC% logs --follow --tail 100 chat image video admin
) else (
    %DC% logs --follow --tail 100 %~2
)
exit /b 0

:do_update
git rev-parse --abbrev-ref --symbolic-full-name @{u} >nul 2>&1
if errorlevel 1 (
    echo update: no git upstream ^(or not a git checkout^); skipping git pull
) else (
    git pull --ff-only
    if errorlevel 1 (
        echo update: git pull --ff-only failed; nothing was restarted
        exit /b 1
    )
)
%DC% build
if errorlevel 1 (
    echo update: the build failed; nothing was restarted
    exit /b 1
)
rem one bot at a time, admin last: a draining bot's role is taken over at once
for %%s in (chat image video admin) do (
    echo update: recreating %%s
    %DC% up -d --no-deps --force-recreate %%s
    if errorlevel 1 exit /b 1
    call :wait_healthy %%s
)
echo update: done
goto do_status

:wait_healthy
set "PORT="
if /i "%~1"=="chat" set "PORT=%CHAT_HEALTH_PORT%"
if /i "%~1"=="image" set "PORT=%IMAGE_HEALTH_PORT%"
if /i "%~1"=="video" set "PORT=%VIDEO_HEALTH_PORT%"
if /i "%~1"=="admin" set "PORT=%ADMIN_HEALTH_PORT%"
for /l %%i in (1,1,60) do (
    curl -s -f -o nul --max-time 2 http://127.0.0.1:!PORT!/health && (
        echo update: %~1 is healthy
        exit /b 0
    )
    timeout /t 1 /nobreak >nul
)
echo update: %~1 is not healthy after 60 s ^(deploy\deploy-multi.bat logs %~1^)
exit /b 1

:do_backup
for /f %%t in ('powershell -NoProfile -Command "(Get-Date).ToUniversalTime().ToString('yyyyMMdd-HHmmssZ')"') do set "TS=%%t"
set "DIR=backups\%TS%"
mkdir "%DIR%" 2>nul
%DC% exec -T postgres sh -c "pg_dump -U $POSTGRES_USER -d $POSTGRES_DB -Fc" > "%DIR%\postgres.dump"
if errorlevel 1 (
    echo backup: pg_dump failed
    exit /b 1
)
%DC% exec -T valkey sh -c "valkey-cli --rdb /tmp/backup.rdb >/dev/null 2>&1 && cat /tmp/backup.rdb && rm -f /tmp/backup.rdb" > "%DIR%\redis.rdb"
if errorlevel 1 (
    echo backup: the Valkey snapshot failed
    exit /b 1
)
copy /y .env.multi "%DIR%\env.multi" >nul
rem only the current user may read the backup (it holds keys)
icacls "%DIR%" /inheritance:r /grant:r "%USERNAME%:(OI)(CI)F" >nul
echo %TS%> backups\latest.txt
echo backup: %DIR% ^(backups\latest.txt names it^)
dir /b "%DIR%"
exit /b 0
